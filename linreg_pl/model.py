"""The class paths 0.1.0 and 0.2.0 wrote into checkpoints and saved configs (`linreg_pl.model.*`); the classes now
live in `linreg_pl.regression.model`. Part of the regression example: delete it with `linreg_pl/regression/`."""

from linreg_pl.regression.model import LinearRegression, Standardize, migrate_checkpoint  # noqa: F401
