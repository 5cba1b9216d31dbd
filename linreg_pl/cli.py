"""The command line: a LightningCLI with fit, validate, test and predict.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl test --config configs/default.yaml --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt

`main(args)` takes the arguments as a list, so tests drive the CLI in-process. Errors in what the
user gave (a value, a file, a checkpoint) print one line and exit with status 2; `--debug` anywhere
on the command line shows the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from typing_extensions import override

from linreg_pl.callbacks import DivergenceError, PredictionWriter
from linreg_pl.data import RegressionDataModule, SyntheticRegressionDataModule
from linreg_pl.errors import ConfigError
from linreg_pl.model import LinearRegression

PROG = "linreg-pl"

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 3,
    "accelerator": "auto",
    # a per-epoch line from ParameterReport says more for runs this short; turn it on for long ones
    "enable_progress_bar": False,
    # a logger that needs no service; each run gets its own lightning_logs/version_N directory
    "logger": lazy_instance(CSVLogger, save_dir=".", name="lightning_logs"),
}

CALLBACK_DEFAULTS = [
    # the best epoch by validation loss
    {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"monitor": "val/loss", "filename": "best-{epoch}-{step}", "auto_insert_metric_name": False},
    },
    # last.ckpt after every epoch, for resuming: since Lightning 2.6 `save_last=True` only writes it
    # when the monitored metric improves, so a second, unmonitored checkpoint keeps the latest epoch
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"filename": "last"}},
    {"class_path": "linreg_pl.callbacks.DivergenceGuard"},
    {"class_path": "linreg_pl.callbacks.InterruptCheckpoint"},
    {"class_path": "linreg_pl.callbacks.ParameterReport"},
]


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing <cloud product>" lines: nothing in them to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with `num_inputs` given once (by the data) and checkpoints checked before use."""

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_inputs", "model.init_args.num_inputs", apply_on="instantiate")
        # always on, with its own key: `predict --predictions.path out.csv`
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.set_defaults(
            {
                "model": lazy_instance(LinearRegression),
                "data": lazy_instance(SyntheticRegressionDataModule),
                # defaults, not persistent callbacks: a config's `trainer.callbacks` list replaces them
                "trainer.callbacks": CALLBACK_DEFAULTS,
            }
        )

    @override
    def before_fit(self) -> None:
        self._prepare_checkpoint()

    @override
    def before_validate(self) -> None:
        self._prepare_checkpoint()

    @override
    def before_test(self) -> None:
        self._prepare_checkpoint()

    @override
    def before_predict(self) -> None:
        self._prepare_checkpoint()

    def _prepare_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            # checkpoints hold tensors and plain values only: never unpickle arbitrary objects from one
            config["weights_only"] = True
        path = config.get("ckpt_path")
        if path is not None and path not in ("last", "best", "hpc", "registry"):
            check_checkpoint(str(path), self.model)


def check_checkpoint(path: str, model: torch.nn.Module) -> None:
    """Raise `ConfigError` unless `path` is a readable checkpoint whose weights fit `model`."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, not a checkpoint, or holds arbitrary objects
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"checkpoint {path!r} cannot be loaded safely: {reason}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path!r} is not a Lightning checkpoint (no state_dict)")
    expected = model.state_dict()
    wrong = [
        f"{key} {tuple(state[key].shape)} (model has {tuple(expected[key].shape)})"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    missing = [key for key in expected if key not in state]
    if wrong or missing:
        detail = "; ".join(wrong + [f"{key} missing" for key in missing])
        raise ConfigError(f"checkpoint {path!r} belongs to a model of another shape: {detail}")


def build_cli(args: list[str] | None = None, run: bool = True) -> LinearRegressionCLI:
    """The project's LightningCLI; `run=False` only parses and instantiates (no subcommand in `args`)."""
    return LinearRegressionCLI(
        LinearRegression,
        RegressionDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        # the optimiser lives in the model (`--model.optimizer`), not in a second CLI-level copy
        auto_configure_optimizers=False,
        trainer_defaults=TRAINER_DEFAULTS,
        parser_kwargs={"prog": PROG},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> LinearRegressionCLI | None:
    """Run the CLI on `args` (default: the command line). Returns the CLI object when it finishes."""
    argv = sys.argv[1:] if args is None else args
    debug = "--debug" in argv
    if args is None:
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    else:
        args = [arg for arg in args if arg != "--debug"]
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisements())
    # torch deprecates a check inside Lightning's own pytree helper; only a Lightning release can fix it
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
    # every run, `test`/`predict` from a checkpoint included, writes to its own version directory, so
    # a restored ModelCheckpoint always finds a new dirpath: nothing is wrong and nothing to do
    warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
    # predict batches carry their own row numbers (PredictionWriter uses them), not sampler indices
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
    try:
        return build_cli(args)
    except (ConfigError, DivergenceError) as error:
        if debug:
            raise
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
