"""Checkpoint files: read once per command (memory-mapped, `weights_only` unless `--weights_only false`) and checked
before Lightning loads them; written atomically (`trainer.plugins` in `linreg_pl/base.yaml`). Directories (FSDP,
DeepSpeed) and other protocols (`s3://`) are Lightning's to read and write.

Lightning's own write moves a temporary file from the system's temp directory with `shutil.move` (a partial file if
a copy across filesystems fails), fsyncs nothing and swallows a `PermissionError`. Here the bytes go to a hidden file
beside the checkpoint, fsynced and renamed over it (atomic on POSIX); what a killed write leaves is deleted at the
next run's start (`remove_stale_temporaries`)."""

import contextlib
import errno
import io
import os
import re
import secrets
import time
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.nn.parameter import UninitializedParameter
from typing_extensions import override

from linreg_pl.errors import ConfigError

_READ: dict[tuple[str, bool, float], dict[str, Any]] = {}  # (path, weights_only, mtime) -> checkpoint


def read_checkpoint(path: str, weights_only: bool = True) -> dict[str, Any] | None:
    """The checkpoint at `path` (a local file), read once; None for what Lightning reads itself (a directory, a URL);
    `ConfigError` if it is not a Lightning checkpoint."""
    if "://" in str(path) or os.path.isdir(path):
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    if (key := (os.path.abspath(path), weights_only, os.path.getmtime(path))) in _READ:
        return _READ[key]
    try:  # a file of torch's legacy format (not a zip archive) cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # corrupt, truncated, not a checkpoint, or holds arbitrary objects
        raise ConfigError(
            f"checkpoint {path!r} cannot be loaded: it is corrupt or truncated, not a checkpoint, or holds objects "
            "other than tensors and plain values, which are loaded only with --weights_only false "
            f"({type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"checkpoint {path!r} is not a Lightning checkpoint (no state_dict)")
    _READ.clear()  # one checkpoint held at a time
    _READ[key] = checkpoint
    return checkpoint


def cached_checkpoint(path: str, weights_only: bool | None) -> dict[str, Any] | None:
    """The checkpoint `read_checkpoint` read from `path` with the same `weights_only`, handed over once."""
    if not os.path.isfile(path):
        return None
    return _READ.pop((os.path.abspath(path), weights_only is not False, os.path.getmtime(path)), None)


def check_checkpoint(path: str, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """`ConfigError` where a weight has another shape than the model's, which `load_state_dict` refuses whatever
    `strict_loading` says; unsized lazy parameters and keys on one side only are left to Lightning."""
    wrong = []
    for key, value in model.state_dict().items():
        saved, lazy = checkpoint["state_dict"].get(key), isinstance(value, UninitializedParameter)
        if isinstance(saved, torch.Tensor) and not lazy and saved.shape != value.shape:
            wrong.append(f"{key} {tuple(saved.shape)} (model has {tuple(value.shape)})")
    if wrong:
        raise ConfigError(f"checkpoint {path!r} belongs to a model of another shape: {'; '.join(wrong)}")


# the temporary name of a `.ckpt` (Lightning's extension): `.<name>.ckpt.` + 8 random characters + `.tmp`
_TEMPORARY_NAME = re.compile(r"^\..+\.ckpt\.[a-z0-9_]{8}\.tmp$")
_IMPORTED_AT = time.time()  # temporary files older than this were left by an earlier process


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file under its name, if any, is intact. An `OSError` with the
    cause's `errno`, so code handling a full disk (`errno.ENOSPC`) keeps working. `last_saved`: the newest checkpoint
    this plugin wrote and did not remove ("" if none)."""

    def __init__(self, path: str, cause: OSError, last_saved: str = "") -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        code = errno.errorcode.get(cause.errno, type(cause).__name__) if cause.errno else type(cause).__name__
        super().__init__(f"could not write checkpoint {path}: {reason} ({code})")
        self.errno, self.strerror, self.filename = cause.errno, cause.strerror, path
        self.path, self.last_saved = path, last_saved

    def __str__(self) -> str:
        return self.args[0]  # OSError would print "[Errno 28] ..." once errno is set


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, writing each checkpoint atomically; a failed write raises `CheckpointWriteError`
    and leaves no temporary file. Serialised in memory first: `torch.save` into a file reports a full disk as a
    `RuntimeError` without the `errno`."""

    last_saved = ""  # the newest checkpoint this plugin wrote and did not remove

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"`storage_options` is not supported by `{type(self).__name__}`")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        directory, name = os.path.split(local_path)
        directory = directory or "."  # a bare file name is in the working directory
        temporary = ""
        try:
            os.makedirs(directory, exist_ok=True)  # ModelCheckpoint relies on the plugin to create it
            candidate = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
            with open(candidate, "xb") as file:  # a new file of our own, never another writer's; open()'s mode
                temporary = candidate
                self._write(file, buffer.getbuffer())
                file.flush()
                os.fsync(file.fileno())  # the bytes are on the disk before the name points at them
            os.replace(temporary, local_path)
        except OSError as error:
            if temporary:
                with contextlib.suppress(OSError):  # its directory is gone too
                    os.unlink(temporary)
            raise CheckpointWriteError(str(path), error, self.last_saved) from error
        with contextlib.suppress(OSError):  # the rename itself made durable, where the filesystem opens a directory
            handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            os.fsync(handle)
            os.close(handle)
        self.last_saved = str(path)

    def _write(self, file: IO[bytes], data: memoryview) -> None:
        """The one place checkpoint bytes reach the file; tests override it to fail or stall midway."""
        file.write(data)

    @override
    def load_checkpoint(self, path: Any, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> Any:
        # the checkpoint the CLI already read from `path`, else Lightning's read: a command reads it once
        if (cached := cached_checkpoint(str(path), weights_only)) is not None:
            return cached
        return super().load_checkpoint(path, *args, weights_only=weights_only, **kwargs)

    @override
    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)  # a file, or a sharded checkpoint's directory; gone already: no error
        if str(path) == self.last_saved:
            self.last_saved = ""


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float = _IMPORTED_AT) -> list[Path]:
    """Delete the temporary files that killed writes left in `directory`, modified before `older_than` (default: this
    module's import, so another process's write in progress is left alone); returns what it deleted."""
    removed = []
    for path in Path(directory).glob(".*.ckpt.*.tmp"):
        regular = _TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink()
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            if regular and path.stat().st_mtime < older_than:
                path.unlink()
                removed.append(path)
    return removed
