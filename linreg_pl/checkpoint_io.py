"""Checkpoints written atomically: each checkpoint path holds the previous complete file or the new one.
`linreg_pl/base.yaml` turns it on: `trainer.plugins: linreg_pl.checkpoint_io.AtomicCheckpointIO`.

Lightning's own write (`fsspec` transaction) puts its temporary file in the system's temp directory and moves it with
`shutil.move`, which copies onto the checkpoint's name across filesystems (a partial file if the copy fails), fsyncs
nothing and swallows a `PermissionError`. Here the bytes go to a hidden temporary file beside the checkpoint, are
fsynced, and renamed over it (atomic on POSIX). A killed process leaves its temporary file; `remove_stale_temporaries`
deletes it at the next run's start. Paths with another protocol (`s3://`) are left to Lightning.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from linreg_pl.checkpoints import cached_checkpoint

# the temporary name of a `.ckpt` (Lightning's extension): `.<name>.ckpt.` + 8 random characters + `.tmp`
_TEMPORARY_NAME = re.compile(r"^\..+\.ckpt\.[a-z0-9_]{8}\.tmp$")
# files older than this were left by an earlier process (read once: os.umask can only be read by setting it)
_IMPORTED_AT = time.time()
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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

    def __init__(self) -> None:
        self.last_saved = ""

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
            # mkstemp underneath: a new file of our own, never another writer's
            with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{name}.", suffix=".tmp", delete=False) as file:
                temporary = file.name
                os.fchmod(file.fileno(), 0o666 & ~_UMASK)  # what a plain open() would give, not mkstemp's 0o600
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
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            return super().remove_checkpoint(path)
        try:
            with contextlib.suppress(FileNotFoundError):  # gone already: not an error, as in Lightning
                os.unlink(local_path)
        except IsADirectoryError:  # a sharded checkpoint; Lightning removes those recursively
            super().remove_checkpoint(path)
        if str(path) == self.last_saved:
            self.last_saved = ""


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files (`.<name>.ckpt.<random>.tmp`) that killed writes left in `directory`, last modified
    before `older_than` (default: when this process imported this module, so another process's write in progress is
    left alone); returns what it deleted."""
    cutoff = _IMPORTED_AT if older_than is None else older_than
    removed = []
    for path in Path(directory).glob(".*.ckpt.*.tmp"):
        regular = _TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink()
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            if regular and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed
