"""The command line: a LightningCLI with fit, validate, test and predict, and `export` beside it.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl test --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
    python -m linreg_pl export --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --output model.onnx

`configs/default.yaml` is the CLI's default config: the experiment is stated there and nowhere else,
and any other `--config` or flag changes it. `--model` and `--data` take any `LightningModule` and
`LightningDataModule` by class path. `main(args)` takes the arguments as a list, so tests drive the
CLI in-process.

`export` is not a Trainer method, which every LightningCLI subcommand is (it builds a Trainer and the
data for each); so `main` hands `export ...` to a small argparse command that needs only a checkpoint.

Errors: jsonargparse reports what it cannot parse (the key and its reason) and exits with status 2;
what this project checks itself (a value, a file, a checkpoint) and what the Trainer refuses print one
line and exit with status 2. `--debug` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

from linreg_pl.callbacks import DivergenceError, PredictionWriter
from linreg_pl.checkpoints import check_checkpoint, load_module, read_checkpoint
from linreg_pl.errors import ConfigError

PROG = "linreg-pl"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
NAMED_CHECKPOINTS = ("last", "best", "hpc", "registry")  # names Lightning resolves itself
EXPORT_HINT = "Also: linreg-pl export --ckpt_path CKPT --output model.onnx|model.pt2 (see `export --help`)."


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


class LinearRegressionCLI(LightningCLI):
    """LightningCLI with `num_inputs` and standardisation given once (by the data), a predictions file,
    and checkpoints checked before use."""

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # each applies where both classes have the argument: a user's model without it is left alone
        parser.link_arguments("data.num_inputs", "model.init_args.num_inputs", apply_on="instantiate")
        parser.link_arguments("data.standardization", "model.init_args.standardization", apply_on="instantiate")
        # a table's column names, kept in the checkpoint for `export` (synthetic data have none)
        parser.link_arguments("data.feature_names", "model.init_args.feature_names", apply_on="instantiate")
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
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
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


def build_cli(args: list[str] | None = None, run: bool = True) -> LinearRegressionCLI:
    """The project's LightningCLI; `run=False` only parses and instantiates (no subcommand in `args`)."""
    defaults = {"default_config_files": [str(DEFAULT_CONFIG)]}
    return LinearRegressionCLI(
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


def export(args: list[str]) -> Path:
    """`export --ckpt_path CKPT --output FILE`: the checkpoint's model as ONNX or a torch.export program."""
    from linreg_pl.export import FORMATS, export_model  # torch.onnx loads only when exporting

    parser = argparse.ArgumentParser(
        prog=f"{PROG} export",
        description="Write a trained model to a file that predicts without this package. The file takes raw "
        'features float32 [batch, num_inputs] named "features" and returns "predictions" [batch] in the '
        "target's units; standardisation is inside it.",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit (any LightningModule)")
    parser.add_argument(
        "--output",
        required=True,
        help=f"the file to write; its suffix picks the format: {', '.join(f'{s} ({n})' for s, n in FORMATS.items())}",
    )
    parser.add_argument(
        "--num_inputs",
        type=int,
        default=None,
        help="number of features; default: the model's num_inputs, else its first nn.Linear's in_features",
    )
    options = parser.parse_args(args)
    model = load_module(options.ckpt_path)
    num_inputs = options.num_inputs or _num_inputs(model)
    names = model.hparams.get("feature_names") or [f"x{i}" for i in range(num_inputs)]
    if len(names) != num_inputs:
        raise ConfigError(f"the checkpoint names {len(names)} features but the model takes {num_inputs}")
    path = export_model(model, num_inputs, options.output)
    print(f"wrote {path} ({FORMATS[path.suffix.lower()]}, {path.stat().st_size:,} bytes)", flush=True)
    print(f'input "features": float32 [batch, {num_inputs}], columns in this order: {", ".join(names)}', flush=True)
    print('output "predictions": float32 [batch]', flush=True)
    return path


def _num_inputs(model: LightningModule) -> int:
    if isinstance(model.hparams.get("num_inputs"), int):
        return model.hparams["num_inputs"]
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
    if first is None:
        raise ConfigError(f"cannot tell how many features {type(model).__name__} takes: give --num_inputs")
    return first.in_features


def _close_process_group() -> None:
    # Lightning leaves the DDP process group open after `fit`/`test`; left to interpreter exit, gloo's
    # threads may be torn down mid-flight (std::terminate, exit status 134). Close it while all are here.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(args: list[str] | None = None) -> LinearRegressionCLI | None:
    """Run the CLI on `args` (default: the command line). Returns the CLI object when it finishes
    (None for `export`)."""
    debug = "--debug" in (sys.argv if args is None else args)
    if args is None:
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    else:
        args = [arg for arg in args if arg != "--debug"]
    if debug:
        os.environ["JSONARGPARSE_DEBUG"] = "true"  # jsonargparse's own switch for its tracebacks
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisements())
    # torch deprecates a check inside Lightning's own pytree helper; only a Lightning release can fix it
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
    # every run, `test`/`predict` from a checkpoint included, writes to its own version directory, so
    # a restored ModelCheckpoint always finds a new dirpath: nothing is wrong and nothing to do
    warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
    # predict batches carry their own row numbers (PredictionWriter uses them), not sampler indices
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] == ["export"]:
            export(argv[1:])
            return None
        cli = build_cli(args)
        _close_process_group()
        return cli
    except SIGTERMException:
        # Lightning stopped at the next batch and InterruptCheckpoint saved; exit as a terminated process does
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        ours = _our_error(error)
        if ours is None or debug:
            raise
        print(f"{PROG}: error: {ours}", file=sys.stderr)
        raise SystemExit(1 if isinstance(ours, DivergenceError) else 2) from None


def _our_error(error: BaseException | None) -> Exception | None:
    """The project's own error behind `error`: jsonargparse re-raises what a class's `__init__` raised
    as the cause of its own error."""
    while error is not None:
        if isinstance(error, (ConfigError, DivergenceError)):
            return error
        error = error.__cause__
    return None
