"""The linear-regression example built on the template's core (`linreg_pl.cli`, `linreg_pl.callbacks`, ...):
the model, synthetic and table data (in memory and streamed), the exact closed form, the report and picture.

    python -m linreg_pl fit --config configs/default.yaml

The core never imports this package; `configs/default.yaml` and its siblings wire it in by class path.
Import the pieces from their modules (`linreg_pl.regression.model.LinearRegression`, ...).
"""
