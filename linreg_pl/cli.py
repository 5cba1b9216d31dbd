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
import re
import signal
import sys
import warnings
from argparse import ArgumentError
from typing import Any

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from linreg_pl.callbacks import DivergenceError, PredictionWriter
from linreg_pl.data import RegressionDataModule, SyntheticRegressionDataModule
from linreg_pl.errors import ConfigError
from linreg_pl.model import LinearRegression
from linreg_pl.profilers import NoOpProfiler

PROG = "linreg-pl"
NAMED_CHECKPOINTS = ("last", "best", "hpc", "registry")  # names Lightning resolves itself

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 3,
    "accelerator": "auto",
    # a per-epoch line from ParameterReport says more for runs this short; turn it on for long ones
    "enable_progress_bar": False,
    # Lightning's default no-op profiler costs ~40 µs a step for nothing (see linreg_pl/profilers.py)
    "profiler": lazy_instance(NoOpProfiler),
    # a logger that needs no service; each run gets its own lightning_logs/version_N directory
    "logger": lazy_instance(CSVLogger, save_dir=".", name="lightning_logs"),
}

CALLBACK_DEFAULTS = [
    # the best epoch by validation loss
    {
        "class_path": "linreg_pl.callbacks.ModelCheckpoint",
        "init_args": {"monitor": "val/loss", "filename": "best-{epoch}-{step}", "auto_insert_metric_name": False},
    },
    # last.ckpt after every epoch, for resuming: since Lightning 2.6 `save_last=True` only writes it
    # when the monitored metric improves, so a second, unmonitored checkpoint keeps the latest epoch
    {"class_path": "linreg_pl.callbacks.ModelCheckpoint", "init_args": {"filename": "last"}},
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

    started = False  # set once the subcommand is about to run: errors before it are the user's config

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
    def _parse_ckpt_path(self) -> None:
        # Lightning reads hyperparameters from the checkpoint before any public hook: check the file first
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path is not None and path not in NAMED_CHECKPOINTS:
            read_checkpoint(str(path))
        super()._parse_ckpt_path()

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
        LinearRegressionCLI.started = True
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            # checkpoints hold tensors and plain values only: never unpickle arbitrary objects from one
            config["weights_only"] = True
        path = config.get("ckpt_path")
        if path is not None and path not in NAMED_CHECKPOINTS:
            check_checkpoint(str(path), self.model)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint at `path`, loaded without unpickling code; `ConfigError` if it is not one."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, not a checkpoint, or holds arbitrary objects
        raise ConfigError(
            f"checkpoint {path!r} cannot be loaded: it is corrupt or truncated, not a checkpoint, or holds objects "
            f"other than tensors and plain values, which are never unpickled ({type(error).__name__})"
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path!r} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_checkpoint(path: str, model: torch.nn.Module) -> None:
    """Raise `ConfigError` unless `path` is a readable checkpoint whose weights fit `model`."""
    state = read_checkpoint(path)["state_dict"]
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
        # parse errors are raised, not printed with the whole usage: main() makes them one line
        parser_kwargs={"prog": PROG, "exit_on_error": False},
        args=args,
        run=run,
    )


def one_line(error: BaseException) -> str:
    """The gist of a parse or configuration error in one line: the key, what is wrong, what is accepted."""
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)":?\s*(.*)', lines[0])
    prefix, rest = (f"{key.group(1)}: ", ([key.group(2)] if key.group(2) else []) + lines[1:]) if key else ("", lines)
    reasons = [line[2:] for line in rest if line.startswith("- ") and "NoneType" not in line]
    problem = next((i for i, line in enumerate(rest) if line.startswith("- Problem with given class_path")), None)
    if problem is not None and problem + 1 < len(rest):
        reason = rest[problem + 1]
        class_path = re.search(r"class_path '([^']+)'", rest[problem])
        unknown = re.match(r"Option '([^']+)' is not accepted", reason)
        if class_path and unknown:
            reason += _accepted_options(class_path.group(1), unknown.group(1))
        return prefix + reason
    expected = [m.group(1) for line in reasons if (m := re.match(r"Expected an? <class '([^']+)'>", line))]
    given = next((line.split(":", 1)[1].strip() for line in rest if line.startswith("Given value:")), None)
    if expected and given is not None:
        nullable = " (or null)" if any("NoneType" in line for line in rest) else ""
        return f"{prefix}expected {' or '.join(expected)}{nullable}, got {given!r}"
    if reasons:
        return prefix + reasons[0]
    if text.startswith("unrecognized arguments"):
        return f"{text} (`{PROG} <subcommand> --help` lists the accepted options)"
    return prefix + (rest[0] if rest else "")


def _accepted_options(class_path: str, unknown: str) -> str:
    import difflib
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        options = [
            p for p in inspect.signature(getattr(importlib.import_module(module), name)).parameters if p != "self"
        ]
    except (ImportError, AttributeError, ValueError):
        return ""
    close = difflib.get_close_matches(unknown, options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} Accepted: {', '.join(options)}"


def _close_process_group() -> None:
    # Lightning leaves the DDP process group open after `fit`/`test`; left to interpreter exit, gloo's
    # threads may be torn down mid-flight (std::terminate, exit status 134). Close it while all are here.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
    LinearRegressionCLI.started = False
    try:
        cli = build_cli(args)
        _close_process_group()
        return cli
    except (ArgumentError, ConfigError, DivergenceError, ValueError, MisconfigurationException) as error:
        # Before the subcommand starts, every error is about what the user gave. After it, only ours
        # are: anything else is a bug and keeps its traceback.
        user_error = not LinearRegressionCLI.started or isinstance(error, (ConfigError, DivergenceError))
        if debug or not user_error:
            raise
        message = one_line(error)
        if "No supported gpu backend found" in message:
            message = "trainer.accelerator: a GPU was asked for but this machine has none usable; use cpu or auto"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, DivergenceError) else 2) from None
    except SIGTERMException:
        # Lightning stopped at the next batch and InterruptCheckpoint saved; exit as a terminated process does
        raise SystemExit(128 + signal.SIGTERM) from None
