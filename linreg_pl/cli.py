"""The command line: LightningCLI's fit, validate, test and predict for any LightningModule and LightningDataModule,
and the `export` and `sweep` commands (their own modules). `linreg_pl/base.yaml` is read before any other config.

    python -m linreg_pl fit --config configs/default.yaml
"""

import contextlib
import importlib
import logging
import os
import pydoc
import signal
import sys
import unittest.mock
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from linreg_pl import runs
from linreg_pl.callbacks import DivergenceError, DivergenceGuard, InterruptCheckpoint, MonitoredMetricsCheck
from linreg_pl.checkpoint_io import CheckpointWriteError, check_checkpoint, read_checkpoint
from linreg_pl.errors import ConfigError
from linreg_pl.predictions import PredictionWriter

PROG = "linreg-pl"
BASE_CONFIG = Path(__file__).with_name("base.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# the callbacks every run gets, each under its own key and of its own class; `--<key> null` leaves one out
FORCED_CALLBACKS = {"last_checkpoint": ModelCheckpoint, "divergence_guard": DivergenceGuard,
                    "interrupt_checkpoint": InterruptCheckpoint, "monitor_check": MonitoredMetricsCheck,
                    "predictions": PredictionWriter}  # fmt: skip
USER_CLASSES = (LightningModule, LightningDataModule, Callback, Logger)  # a user's class that raises when built
# Lightning's "💡 Tip: try installing <cloud product>" lines: nothing in them to act on
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: not str(r.msg).startswith("💡"))


class _ReasonFirstParser(LightningArgumentParser):
    """jsonargparse's parser, whose errors show the reason without 50 lines of usage above it (`--help` has them)."""

    @override
    def print_usage(self, file: Any = None) -> None:
        pass


class ProjectCLI(LightningCLI):
    """LightningCLI with the callbacks every run gets under keys of their own (added whatever `trainer.callbacks` says),
    the links a data module declares (`model_arguments`: its attributes the model takes as init arguments of the same
    name), run directories reserved first, `--ckpt_path last|best` across runs, the checkpoint read once."""

    run_directory: str | None = None  # the version directory this process reserved for the run
    checkpoint: dict[str, Any] | None = None  # the checkpoint `ckpt_path` names, read once

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key, cls in FORCED_CALLBACKS.items():  # defaults in base.yaml
            parser.add_subclass_arguments(cls, key, required=False, fail_untyped=False)
        self._parsers = [*getattr(self, "_parsers", []), parser]

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        if config.get("ckpt_path") in ("last", "best"):
            config.ckpt_path = runs.find_checkpoint(config.ckpt_path, config.trainer, self.config.get("subcommand"))
        if config.get("ckpt_path") not in (None, "hpc", "registry", "last", "best"):
            self.checkpoint = read_checkpoint(str(config.ckpt_path), config.get("weights_only") is not False)

    @override
    def _parse_ckpt_path(self) -> None:
        # LightningCLI's own step (the checkpoint's model hyperparameters into the config), from the checkpoint read
        # once above, which LightningCLI would read a second time
        hparams = dict((self.checkpoint or {}).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.checkpoint is None or self.subcommand == "fit":  # from a checkpoint, the model's arguments are its
            data = pydoc.locate(str((config.get("data") or {}).get("class_path")))
            for name in getattr(data, "model_arguments", ()):
                for parser in self._parsers:
                    parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        self._given, self.run_directory = runs.place_run(config.trainer)

    @override
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except BaseException:
            if self.run_directory:  # reserved for a run that never started: give the name back
                with contextlib.suppress(OSError):  # unless something was written there after all
                    os.rmdir(self.run_directory)
            raise
        for args, key, value in self._given:  # the saved config.yaml keeps what the user gave
            args[key] = value

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        given = trainer.get("callbacks") or []
        forced = [config[key] for key in FORCED_CALLBACKS if config.get(key) is not None]
        # the guards before the config's callbacks (they see a step first, and put Ctrl-C back first when training
        # ends); last.ckpt after the config's ModelCheckpoints, so the first of those is trainer.checkpoint_callback
        last = [c for c in forced if isinstance(c, ModelCheckpoint)]
        guards = [c for c in forced if not isinstance(c, ModelCheckpoint)]
        callbacks = [*guards, *(given if isinstance(given, list) else [given]), *last]
        off = trainer.get("enable_checkpointing") is False  # the Trainer refuses a ModelCheckpoint then
        kwargs["callbacks"] = [c for c in callbacks if not (off and isinstance(c, ModelCheckpoint))]
        if trainer.get("logger") is False and self.run_directory:  # no logger to name it: the run's root
            kwargs.setdefault("default_root_dir", self.run_directory)
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, TypeError, ValueError) as error:  # e.g. `--trainer.devices abc`
            raise ConfigError(f"trainer: {error}") from error

    def _before_subcommand(self) -> None:
        config = self.config_init[self.subcommand]
        # unless given: load tensors and plain values only (no arbitrary pickles); predictions in their file only
        config["weights_only"] = config.get("weights_only") is not False
        if self.subcommand == "predict":
            config["return_predictions"] = bool(config.get("return_predictions"))
        if self.checkpoint is None:
            return
        path = str(config["ckpt_path"])
        check_checkpoint(path, self.checkpoint, self.model)
        # the links were not applied (the model's arguments are the checkpoint's): the data must agree with them
        given = vars(self.datamodule) if self.datamodule is not None else {}
        for name in getattr(self.datamodule, "model_arguments", ()):
            trained = self.model.hparams.get(name)
            if isinstance(trained, (int, str)) and name in given and given[name] != trained:
                raise ConfigError(
                    f"checkpoint {path!r} was trained with {name} {trained!r}; the data give {given[name]!r}"
                )

    before_fit = before_validate = before_test = before_predict = _before_subcommand


def build_cli(args: list[str] | None = None, run: bool = True) -> ProjectCLI:
    """The project's LightningCLI; `run=False` only parses and instantiates (no subcommand in `args`)."""
    defaults = {"prog": PROG, "default_config_files": [str(BASE_CONFIG)]}
    subcommands = {"epilog": "Also: linreg-pl export --help", **{s: defaults for s in SUBCOMMANDS}}
    options = {"subclass_mode_model": True, "subclass_mode_data": True, "parser_class": _ReasonFirstParser}
    parser_kwargs = {"prog": PROG, **subcommands} if run else defaults
    return ProjectCLI(LightningModule, LightningDataModule, parser_kwargs=parser_kwargs, args=args, run=run, **options)


def _check_experiment(argv: list[str]) -> None:
    """An overlay config (ddp.yaml, gpu.yaml, ...) given without an experiment: one line saying what to put first."""
    if argv[:1] not in ([s] for s in SUBCOMMANDS) or {"-h", "--help", "--model"} & {a.split("=")[0] for a in argv}:
        return
    configs = [v for k, v in zip(argv, argv[1:], strict=False) if k in ("-c", "--config")]
    configs += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    loaded = [yaml.safe_load(Path(c).read_text()) if os.path.isfile(c) else {"model": c} for c in configs]
    if configs and not any(isinstance(c, dict) and "model" in c for c in loaded):  # without: jsonargparse's words
        raise ConfigError(
            f"{', '.join(configs)} names no model: it adds to an experiment; put an experiment config before it "
            "(e.g. --config configs/default.yaml), or give --model and --data"
        )


def main(args: list[str] | None = None) -> ProjectCLI | None:
    """Run the CLI on `args` (default: the command line); returns the CLI object (None for `export` and `sweep`).
    What we check, what the Trainer refuses and what a user's class raises while built are one line and status 2 (a
    divergence or a failed checkpoint write: 1); `--debug` shows the traceback."""
    argv = sys.argv[1:] if args is None else args
    debug, argv = "--debug" in argv, [arg for arg in argv if arg != "--debug"]
    if args is None:
        sys.argv[1:] = argv
    # torch deprecates a check inside Lightning's own pytree helper; only a Lightning release can fix it
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
    # every run, `test`/`predict` included, writes to a directory of its own: a restored ModelCheckpoint always
    # finds a new dirpath, and nothing is wrong
    warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
    # PredictionWriter numbers rows by the batch's `row` field or its position where a loader has no indices
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
    # jsonargparse's own switch for its tracebacks, for this call only: main() may be called again in-process
    with unittest.mock.patch.dict(os.environ, {"JSONARGPARSE_DEBUG": "true"} if debug else {}):
        return _run(argv, debug, from_sys_argv=args is None)


def _run(argv: list[str], debug: bool, from_sys_argv: bool) -> ProjectCLI | None:
    try:
        if argv[:1] in (["export"], ["sweep"]):  # commands of their own; torch.onnx or optuna load only for them
            importlib.import_module(f"linreg_pl.{argv[0]}").main(argv[1:])
            return None
        _check_experiment(argv)
        cli = build_cli(None if from_sys_argv else argv)  # LightningCLI warns when given sys.argv's own
        # Lightning leaves the DDP process group open; left to interpreter exit, gloo's threads may be torn down
        # mid-flight (std::terminate, status 134). Closed while every process is here
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return cli
    except SIGTERMException as stop:  # Lightning stopped between steps; InterruptCheckpoint set the status
        raise SystemExit(stop.code or 128 + signal.SIGTERM) from None
    except Exception as error:
        message = str(error) if isinstance(error, MisconfigurationException) else _message(error)
        if message is None or debug:  # Lightning's refusals during a run (MisconfigurationException): its words
            raise
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(1 if isinstance(_ours(error), (DivergenceError, CheckpointWriteError)) else 2) from None


def _ours(error: BaseException | None) -> Exception | None:
    while error is not None and not isinstance(error, (ConfigError, DivergenceError, CheckpointWriteError)):
        error = error.__cause__
    return error


def _message(error: Exception) -> str | None:
    """One line for `error`: ours, or a user's class refusing its arguments (its class and its own words)."""
    ours = _ours(error)
    if isinstance(ours, CheckpointWriteError):
        if ours.last_saved:
            return f"{ours}; resume from the last good checkpoint: --ckpt_path {ours.last_saved}"
        return f"{ours}; no checkpoint of this run was written before it"
    if ours is not None:
        return str(ours)
    seen: BaseException | None = error
    while seen is not None:  # the constructor of a model, data module, callback or logger that raised
        frame = seen.__traceback__
        while frame is not None:
            owner = frame.tb_frame.f_locals.get("self") if frame.tb_frame.f_code.co_name == "__init__" else None
            if isinstance(owner, USER_CLASSES):
                return f"{type(owner).__module__}.{type(owner).__qualname__}: {type(seen).__name__}: {seen}"
            frame = frame.tb_next
        seen = seen.__cause__ or seen.__context__
    return None
