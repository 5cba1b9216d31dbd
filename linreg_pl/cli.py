"""The command line: a LightningCLI with fit, validate, test and predict, and `export` beside it.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl test --config configs/default.yaml --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
    python -m linreg_pl export --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --output model.onnx
    python -m linreg_pl fit --model my_package.Classifier --data my_package.Blobs

`--model` and `--data` take any `LightningModule` and `LightningDataModule` by class path, or from a config.
`configs/base.yaml` is the CLI's default config, read before any other: what every run needs whatever the
model (logger, `last.ckpt`, guards); an experiment's config (`configs/default.yaml`, the regression example)
adds its model, data and callbacks. `main(args)` takes the arguments as a list, so tests drive the CLI
in-process.

`export` is not a Trainer method, which every LightningCLI subcommand is (it builds a Trainer and the
data for each); so `main` hands `export ...` to a small argparse command that needs only a checkpoint.

Errors: jsonargparse reports what it cannot parse (the key and its reason) and exits with status 2;
what this project checks itself (a value, a file, a checkpoint) and what the Trainer refuses print one
line and exit with status 2; a divergence or a checkpoint that cannot be written print one line and exit
with status 1. `--debug` anywhere on the command line shows the traceback instead.

Where a run lands: every run gets a directory of its own, `<root>/<name>/version_N` (`<root>` is
`--trainer.default_root_dir`, default the working directory; `<name>` the logger's, `lightning_logs`),
holding config.yaml, the logs and `checkpoints/`. A logger's relative `save_dir` is relative to `<root>`;
the version directory is reserved with `os.mkdir` before anything is written, so runs started together
never share one. With `--trainer.logger false` the run still gets `<root>/lightning_logs/version_N`, and
with `--trainer.enable_checkpointing false` no checkpoint is written.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from linreg_pl.callbacks import DivergenceError, PredictionWriter
from linreg_pl.checkpoint_io import CheckpointWriteError
from linreg_pl.checkpoints import (
    LINKS_FROM_CHECKPOINT,
    check_checkpoint,
    read_checkpoint,
)
from linreg_pl.errors import ConfigError

PROG = "linreg-pl"
# what every run needs, whatever the model (logger, last.ckpt, guards); read before any other config
BASE_CONFIG = Path(__file__).with_name("base.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
NAMED_CHECKPOINTS = ("last", "best", "hpc", "registry")  # names Lightning resolves itself
EXPORT_HINT = "Also: linreg-pl export --ckpt_path CKPT --output model.onnx|model.pt2 (see `export --help`)."
# the data module's values that the CLI links into the model's arguments of the same name
LINKED_FROM_DATA = ("num_inputs", "standardization", "feature_names", "encoding")
RUNS_NAME = "lightning_logs"  # the runs' folder without a logger, as Lightning's own loggers name it


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing <cloud product>" lines: nothing in them to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


class _ReasonFirstParser(LightningArgumentParser):
    """jsonargparse's parser, whose errors show the tip and the reason without 50 lines of usage above
    them (`--help` still prints it all)."""

    @override
    def print_usage(self, file: Any = None) -> None:
        pass


class ProjectCLI(LightningCLI):
    """LightningCLI with values both classes take given once (by the data), a predictions file, run directories
    reserved before anything is written, and checkpoints checked before use."""

    run_directory: str | None = None  # the version directory this process reserved for the run

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # each applies where both classes have the argument: a user's model without it is left alone.
        # feature_names: a table's input names, kept in the checkpoint for `export` (synthetic data have none);
        # encoding: a table's columns and their levels, which validate, test and predict encode with
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        # always on, with its own key: `predict --predictions.path out.csv`
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Lightning reads the checkpoint's hyperparameters right after parsing: check the file first
        path = self._ckpt_path(self.config)
        if path is not None:
            read_checkpoint(path)

    @override
    def before_instantiate_classes(self) -> None:
        self._given: list[tuple[Namespace, str, Any]] = []
        self.run_directory = _place_run(self._get(self.config, "trainer"), self._given)

    @override
    def instantiate_classes(self) -> None:
        # validate/test/predict from a checkpoint: LightningCLI has put the checkpoint's hyperparameters into the
        # model's config; a data module may then decline the links (see LINKS_FROM_CHECKPOINT)
        from_checkpoint = self.subcommand in ("validate", "test", "predict") and self._ckpt_path(self.config)
        token = LINKS_FROM_CHECKPOINT.set(bool(from_checkpoint))
        try:
            super().instantiate_classes()
            # the loggers have their reserved version and save_dir under the root; the saved config.yaml keeps
            # what the user gave, so a rerun from it (`fit --config <run>/config.yaml`) gets a directory of its own
            for args, key, value in self._given:
                args[key] = value
        except BaseException:
            if self.run_directory:  # reserved for a run that never started: give the name back
                try:
                    os.rmdir(self.run_directory)
                except OSError:
                    pass  # something was written there after all
            raise
        finally:
            LINKS_FROM_CHECKPOINT.reset(token)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        if trainer.get("enable_checkpointing") is False and trainer.get("callbacks"):
            # the config's ModelCheckpoints would make the Trainer refuse `enable_checkpointing=False`
            trainer["callbacks"] = [c for c in trainer["callbacks"] if not isinstance(c, ModelCheckpoint)]
        if trainer.get("logger") is False and self.run_directory:
            # no logger to name the run's directory: the Trainer's root is it (config.yaml, checkpoints/);
            # given here, not in the config, so the saved config.yaml still says what the user said
            kwargs.setdefault("default_root_dir", self.run_directory)
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, TypeError, ValueError) as error:
            # what the Trainer refuses in its arguments, e.g. `--trainer.devices abc`, in its own words
            raise ConfigError(f"trainer: {error}") from error

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
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:
            # the predictions file has them; Lightning would otherwise also keep every batch's in memory
            config["return_predictions"] = False

    def _prepare_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            # checkpoints hold tensors and plain values only: never unpickle arbitrary objects from one
            config["weights_only"] = True
        path = self._ckpt_path(self.config)
        if path is not None:
            check_checkpoint(path, self.model)

    @staticmethod
    def _ckpt_path(config: Any) -> str | None:
        subcommand = config.get("subcommand")
        path = config[subcommand].get("ckpt_path") if subcommand else None
        return None if path is None or path in NAMED_CHECKPOINTS else str(path)


def build_cli(args: list[str] | None = None, run: bool = True) -> ProjectCLI:
    """The project's LightningCLI; `run=False` only parses and instantiates (no subcommand in `args`)."""
    defaults = {"default_config_files": [str(BASE_CONFIG)]}
    return ProjectCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # the optimiser lives in the model (`--model.optimizer`), not in a second CLI-level copy
        auto_configure_optimizers=False,
        parser_class=_ReasonFirstParser,
        parser_kwargs=(
            {"prog": PROG, **defaults}
            if not run
            else {"prog": PROG, "epilog": EXPORT_HINT, **{s: defaults for s in SUBCOMMANDS}}
        ),
        args=args,
        run=run,
    )


def _place_run(trainer: Namespace | None, given: list[tuple[Namespace, str, Any]]) -> str | None:
    """Put relative logger `save_dir`s under `trainer.default_root_dir` and reserve the run's version
    directory; returns the directory reserved (None on other processes than the first, under
    `fast_dev_run`, and when a logger's version is given or unknown to us). Each logger argument changed is
    appended to `given` as (its init_args, its name, the value the user gave).

    Lightning's CSV and TensorBoard loggers pick `version_N` by listing the directory when they first
    write, so two runs started together can pick the same one; `os.mkdir` either creates the directory
    or fails, so the first run to create it owns it. Loggers with other layouts are left to themselves.
    """
    if trainer is None or trainer.get("fast_dev_run"):
        return None
    root = trainer.get("default_root_dir")
    logger = trainer.get("logger")
    loggers = logger if isinstance(logger, list) else [logger]
    # Lightning's loggers of the <save_dir>/<name>/version_N layout; others (MLflow, W&B, ...) keep their own
    file_loggers = [lg.init_args for lg in loggers if isinstance(lg, Namespace) and _versioned_logger(lg)]
    for args in file_loggers:
        if root and not os.path.isabs(args.save_dir):
            given.append((args, "save_dir", args.save_dir))
            args.save_dir = os.path.normpath(os.path.join(root, args.save_dir))
    if rank_zero_only.rank != 0:  # Lightning broadcasts the first process's directories to the others
        return None
    if logger is False:
        version = _reserve_version(os.path.join(root or ".", RUNS_NAME))
        return os.path.join(root or ".", RUNS_NAME, f"version_{version}")
    if not file_loggers or file_loggers[0].get("version") is not None:
        return None
    first = file_loggers[0]
    runs = os.path.join(first.save_dir, first.get("name") or "")
    version = _reserve_version(runs)
    for args in file_loggers:  # all in one version, as Lightning's log_dir is the first logger's
        if args.get("version") is None:
            given.append((args, "version", None))
            args.version = version
    return os.path.join(runs, f"version_{version}")


def _versioned_logger(logger: Namespace) -> bool:
    """Whether the logger a config names lays its runs out as <save_dir>/<name>/version_N, as Lightning's CSV and
    TensorBoard loggers (and their subclasses) do."""
    module, _, name = str(logger.get("class_path", "")).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, (CSVLogger, TensorBoardLogger))


def _reserve_version(runs: str) -> int:
    """Create `runs/version_N` for the next free N, atomically, and return N."""
    os.makedirs(runs, exist_ok=True)
    taken = [int(m.group(1)) for name in os.listdir(runs) if (m := re.fullmatch(r"version_(\d+)", name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            os.mkdir(os.path.join(runs, f"version_{version}"))
            return version
        except FileExistsError:  # another run took it since the listing
            version += 1


def _close_process_group() -> None:
    # Lightning leaves the DDP process group open after `fit`/`test`; left to interpreter exit, gloo's
    # threads may be torn down mid-flight (std::terminate, exit status 134). Close it while all are here.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(args: list[str] | None = None) -> ProjectCLI | None:
    """Run the CLI on `args` (default: the command line). Returns the CLI object when it finishes
    (None for `export`)."""
    debug = "--debug" in (sys.argv if args is None else args)
    if args is None:
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    else:
        args = [arg for arg in args if arg != "--debug"]
    if not debug:
        return _main(args)
    # jsonargparse's own switch for its tracebacks, for this call only: main() may be called again in-process
    previous = os.environ.get("JSONARGPARSE_DEBUG")
    os.environ["JSONARGPARSE_DEBUG"] = "true"
    try:
        return _main(args, debug=True)
    finally:
        if previous is None:
            del os.environ["JSONARGPARSE_DEBUG"]
        else:
            os.environ["JSONARGPARSE_DEBUG"] = previous


def _main(args: list[str] | None, debug: bool = False) -> ProjectCLI | None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisements())
    # torch deprecates a check inside Lightning's own pytree helper; only a Lightning release can fix it
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
    # every run, `test`/`predict` from a checkpoint included, writes to its own version directory, so
    # a restored ModelCheckpoint always finds a new dirpath: nothing is wrong and nothing to do
    warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
    # predict batches carry their own row numbers (PredictionWriter uses them), not sampler indices
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
    # this project's model logs once per epoch, so an epoch shorter than `log_every_n_steps` loses nothing
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging interval")
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] == ["export"]:
            from linreg_pl.export import main as export  # torch.onnx loads only when exporting

            export(argv[1:])
            return None
        if argv[:1] == ["sweep"]:
            from linreg_pl.sweep import main as sweep  # Optuna loads only for a sweep

            sweep(argv[1:])
            return None
        cli = build_cli(args)
        _close_process_group()
        return cli
    except SIGTERMException as stop:
        # Lightning stopped between steps; InterruptCheckpoint saved and set the status (130 after Ctrl-C)
        raise SystemExit(stop.code or 128 + signal.SIGTERM) from None
    except MisconfigurationException as error:
        # Lightning's refusal of a setting it checks during the run (a monitored metric never logged, ...): its
        # own words, without the traceback
        if debug:
            raise
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:
        ours = _our_error(error)
        if ours is None or debug:
            raise
        print(f"{PROG}: error: {_message(ours)}", file=sys.stderr)
        raise SystemExit(1 if isinstance(ours, (DivergenceError, CheckpointWriteError)) else 2) from None


def _our_error(error: BaseException | None) -> Exception | None:
    """The project's own error behind `error`: jsonargparse re-raises what a class's `__init__` raised
    as the cause of its own error."""
    while error is not None:
        if isinstance(error, (ConfigError, DivergenceError, CheckpointWriteError)):
            return error
        error = error.__cause__
    return None


def _message(error: Exception) -> str:
    if isinstance(error, CheckpointWriteError):
        if error.last_saved:
            return f"{error}; resume from the last good checkpoint: --ckpt_path {error.last_saved}"
        return f"{error}; no checkpoint of this run was written before it"
    return str(error)
