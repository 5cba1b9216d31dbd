"""Checkpoint files read once per command (memory-mapped, `weights_only` unless `--weights_only false`) and checked
before Lightning loads them. Directories (FSDP, DeepSpeed) and URLs are Lightning's to read.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.nn.parameter import UninitializedParameter

from linreg_pl.errors import ConfigError

_READ: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}  # (path, weights_only) -> (mtime, checkpoint)


def read_checkpoint(path: str, weights_only: bool = True) -> dict[str, Any] | None:
    """The checkpoint at `path` (a local file), read once; None for what Lightning reads itself (a directory, a URL);
    `ConfigError` if it is not a Lightning checkpoint."""
    if "://" in str(path) or os.path.isdir(path):
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    key, mtime = (os.path.abspath(path), weights_only), os.path.getmtime(path)
    if key in _READ and _READ[key][0] == mtime:
        return _READ[key][1]
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError:  # a file of torch's legacy format cannot be memory-mapped
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # corrupt, truncated, not a checkpoint, or holds arbitrary objects
        raise ConfigError(
            f"checkpoint {path!r} cannot be loaded: it is corrupt or truncated, not a checkpoint, or holds objects "
            "other than tensors and plain values, which are loaded only with --weights_only false "
            f"({type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"checkpoint {path!r} is not a Lightning checkpoint (no state_dict)")
    _READ.clear()  # one checkpoint held at a time
    _READ[key] = (mtime, checkpoint)
    return checkpoint


def cached_checkpoint(path: str, weights_only: bool | None) -> dict[str, Any] | None:
    """The checkpoint `read_checkpoint` read from `path` with the same `weights_only`, handed over once."""
    key = (os.path.abspath(path), weights_only is not False)
    if key in _READ and os.path.isfile(path) and _READ[key][0] == os.path.getmtime(path):
        return _READ.pop(key)[1]
    return None


def check_checkpoint(path: str, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """`ConfigError` where a weight has another shape than the model's, which `load_state_dict` refuses whatever
    `strict_loading` says; unsized lazy parameters and keys on one side only are left to Lightning."""
    state = checkpoint["state_dict"]
    wrong = [
        f"{key} {tuple(state[key].shape)} (model has {tuple(value.shape)})"
        for key, value in model.state_dict().items()
        if key in state
        and not isinstance(value, UninitializedParameter)
        and isinstance(state[key], torch.Tensor)
        and tuple(state[key].shape) != tuple(value.shape)
    ]
    if wrong:
        raise ConfigError(f"checkpoint {path!r} belongs to a model of another shape: {'; '.join(wrong)}")
