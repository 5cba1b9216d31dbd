"""Where runs land, and `--ckpt_path last|best` across them. Each run gets `<root>/<name>/version_N`
(`--trainer.default_root_dir`, the logger's name), reserved with `os.mkdir` before anything is written: Lightning's
CSV and TensorBoard loggers pick N by listing the directory, so runs started together could share one. A logger's
relative `save_dir` is under `<root>`; other layouts (MLflow, W&B) are left alone. Each run being new, Lightning's
`ckpt_path="last"` would look only in the new, empty run: here `last` is the newest `last*.ckpt` or `interrupted.ckpt`
among the runs, `best` the best one the newest run's monitor recorded."""

import glob
import os
import pydoc
import re
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from linreg_pl.errors import ConfigError

VERSIONED = (CSVLogger, TensorBoardLogger)  # the loggers that number their runs version_N
RUNS_NAME = "lightning_logs"  # the runs' folder without a logger, as Lightning's own loggers name it


def place_run(trainer: Namespace) -> tuple[list[tuple[Namespace, str, Any]], str | None]:
    """Put the loggers' relative `save_dir`s under `<root>` and, on the first process (Lightning broadcasts its
    directories), reserve the run's directory; returns (init_args, key, value given) of each logger value it may
    change, and the directory (None: `fast_dev_run`, another process, a version given, another layout)."""
    loggers = _versioned_loggers(trainer)
    given = [(args, key, args.get(key)) for args in loggers for key in ("save_dir", "version")]
    runs = _runs_directory(trainer, _under_root(trainer, loggers))
    versioned = any(args.get("version") is not None for args in loggers)
    if trainer.get("fast_dev_run") or rank_zero_only.rank != 0 or runs is None or versioned:
        return given, None
    os.makedirs(runs, exist_ok=True)
    taken = [int(m.group(1)) for name in os.listdir(runs) if (m := re.fullmatch(r"version_(\d+)", name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            os.mkdir(os.path.join(runs, f"version_{version}"))
            break
        except FileExistsError:  # another run took it since the listing
            version += 1
    for args in loggers:  # all in one version, as Lightning's log_dir is the first logger's
        args.version = version
    return given, os.path.join(runs, f"version_{version}")


def find_checkpoint(name: str, trainer: Namespace, subcommand: str | None) -> str | None:
    """What `--ckpt_path last|best` means among the experiment's runs (`name` itself for loggers of another layout:
    Lightning's meaning); None, with one line, when `fit` has none to resume."""
    trainer = trainer.clone()
    runs = _runs_directory(trainer, _under_root(trainer, _versioned_loggers(trainer)))
    if runs is None:
        return name
    found = glob.glob(os.path.join(glob.escape(runs), "version_*", "checkpoints", "*.ckpt"))
    candidates = [path for path in found if re.fullmatch(r"last.*\.ckpt|interrupted\.ckpt", os.path.basename(path))]
    if not candidates and subcommand != "fit":
        raise ConfigError(f"--ckpt_path {name}: no checkpoint under {runs} yet; fit first")
    if not candidates:
        if rank_zero_only.rank == 0:
            print(f"--ckpt_path {name}: no checkpoint under {runs} yet, so training starts from scratch")
        return None
    newest = max(candidates, key=os.path.getmtime)
    if name == "last":
        return newest
    states = torch.load(newest, map_location="cpu", weights_only=True, mmap=True).get("callbacks") or {}
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") and state.get("best_model_path"):
            return state["best_model_path"]
    raise ConfigError(
        f"--ckpt_path best: the newest run ({newest}) has no ModelCheckpoint with a monitor, so no checkpoint is the "
        "best; give the path of one, or `last`"
    )


def _versioned_loggers(trainer: Namespace) -> list[Namespace]:
    """The init_args of the loggers of the <save_dir>/<name>/version_N layout (CSV, TensorBoard, subclasses)."""
    logger = trainer.get("logger")
    loggers = [lg for lg in (logger if isinstance(logger, list) else [logger]) if isinstance(lg, Namespace)]
    classes = [pydoc.locate(str(lg.get("class_path"))) for lg in loggers]
    return [
        lg.init_args for lg, c in zip(loggers, classes, strict=True) if isinstance(c, type) and issubclass(c, VERSIONED)
    ]


def _under_root(trainer: Namespace, loggers: list[Namespace]) -> list[Namespace]:
    for args in loggers:
        if trainer.get("default_root_dir") and not os.path.isabs(args.save_dir):
            args.save_dir = os.path.normpath(os.path.join(trainer.default_root_dir, args.save_dir))
    return loggers


def _runs_directory(trainer: Namespace, loggers: list[Namespace]) -> str | None:
    """`<root>/<name>`, where the experiment's runs are; None for loggers of another layout."""
    if trainer.get("logger") is False:
        return os.path.join(trainer.get("default_root_dir") or ".", RUNS_NAME)
    return os.path.join(loggers[0].save_dir, loggers[0].get("name") or "") if loggers else None
