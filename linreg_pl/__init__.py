"""linreg_pl: linear regression on synthetic or file data with PyTorch Lightning.

    python -m linreg_pl fit --config configs/default.yaml

Import the pieces from their modules (`linreg_pl.model.LinearRegression`,
`linreg_pl.data.SyntheticRegressionDataModule`, ...): this file imports nothing, so that
`python -m linreg_pl` pays only for what it uses.
"""

__version__ = "0.2.0"
