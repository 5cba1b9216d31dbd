"""Checkpoint files checked before Lightning loads them: missing, corrupt, unsafe or of another shape.

    python -m linreg_pl test --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt

Each problem is one `ConfigError` line instead of a traceback from deep inside `torch.load`.
"""

from __future__ import annotations

import importlib
import os
from contextvars import ContextVar
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule

from linreg_pl.errors import ConfigError

# True while the CLI instantiates the classes of validate, test or predict from a checkpoint, whose model
# hyperparameters LightningCLI has already put into the model's config. A data module whose linked values
# (`num_inputs`, `feature_names`, ...) cost a read of its training data may then raise AttributeError for them:
# jsonargparse leaves a link whose source attribute is missing alone, so the model keeps the checkpoint's values.
LINKS_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("LINKS_FROM_CHECKPOINT", default=False)


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
    """Raise `ConfigError` unless `path` is a readable checkpoint whose weights fit `model`.

    The model's `on_load_checkpoint` runs first, as Lightning runs it before loading the weights:
    a checkpoint of an earlier layout is compared once migrated (`LinearRegression` migrates there).
    """
    checkpoint = read_checkpoint(path)
    if isinstance(model, LightningModule):
        model.on_load_checkpoint(checkpoint)
    state = checkpoint["state_dict"]
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


def load_module(path: str) -> LightningModule:
    """The LightningModule saved in the checkpoint at `path`, rebuilt from its hyperparameters, on the CPU.

    A checkpoint written through the CLI names its class (`_class_path`); that class is imported and
    `load_from_checkpoint` rebuilds it, so a user's own LightningModule loads too. Every problem is one
    `ConfigError` line.
    """
    checkpoint = read_checkpoint(path)
    cls = _saved_class(path, checkpoint.get("hyper_parameters") or {}, LightningModule, "module")
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's "size mismatch for linear.weight ...", an init argument refused
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ConfigError(f"checkpoint {path!r} does not rebuild its {cls.__name__}: {reason}") from None


def load_datamodule(path: str) -> LightningDataModule | None:
    """The LightningDataModule the checkpoint at `path` names, built from its saved hyperparameters; None when
    it saved none (a data module records them by calling `self.save_hyperparameters()`)."""
    hparams = dict(read_checkpoint(path).get("datamodule_hyper_parameters") or {})
    if "_class_path" not in hparams:
        return None
    cls = _saved_class(path, hparams, LightningDataModule, "data module")
    arguments = {key: value for key, value in hparams.items() if not key.startswith("_")}
    try:
        return cls(**arguments)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"checkpoint {path!r}: its {cls.__name__} cannot be built again ({error})") from None


def _saved_class(path: str, hparams: dict[str, Any], base: type, what: str) -> type:
    """The class a checkpoint's hyperparameters name (`_class_path`, as LightningCLI records it), imported."""
    class_path = hparams.get("_class_path")
    if class_path is None:
        raise ConfigError(
            f"checkpoint {path!r} does not name its {what}'s class; it was not written through this CLI "
            "(LightningCLI records `_class_path` in the hyperparameters)"
        )
    module_name, _, class_name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"checkpoint {path!r} holds a {class_path}, which cannot be imported here ({type(error).__name__}: {error})"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"checkpoint {path!r} names {class_path}, which is not a {base.__name__}")
    return cls
