"""linreg_pl: a PyTorch Lightning template (the core) with linear regression as its example (`linreg_pl.regression`).
This file imports nothing, so that `python -m linreg_pl` pays only for what it uses."""

__version__ = "0.3.0"
