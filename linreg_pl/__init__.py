"""linreg_pl: a PyTorch Lightning template (the core: CLI, checkpoints, guards, predictions, export) with
linear regression as its example (`linreg_pl.regression`).

    python -m linreg_pl fit --config configs/default.yaml

Import the pieces from their modules (`linreg_pl.cli.main`, `linreg_pl.regression.model.LinearRegression`,
...): this file imports nothing, so that `python -m linreg_pl` pays only for what it uses.
"""

__version__ = "0.3.0"
