"""Checkpoints written atomically: each checkpoint path holds the previous complete file or the new one.

Every checkpoint Lightning writes (the best, `last.ckpt`, `interrupted.ckpt`, `trainer.save_checkpoint`)
goes through the trainer's `CheckpointIO` plugin. This one is Lightning's `TorchCheckpointIO` with a
different write: the bytes go to a hidden temporary file in the checkpoint's own directory
(`.last.ckpt.<random>.tmp`), are flushed to the disk, and only then renamed over the checkpoint.
A rename within one directory is atomic on POSIX, so a full disk, a removed directory or a killed
process leaves the previous checkpoint untouched. Turn it on in the config:

    trainer:
      plugins: linreg_pl.checkpoint_io.AtomicCheckpointIO

or `--trainer.plugins linreg_pl.checkpoint_io.AtomicCheckpointIO` on the command line.

Lightning's own write (`lightning.fabric.utilities.cloud_io._atomic_save`) goes through an fsspec
transaction: the temporary file is created in the system temp directory, not beside the checkpoint,
and moved with `shutil.move`, which falls back to copying onto the checkpoint path when the two are on
different filesystems (a partial file under the checkpoint's name if the copy fails); nothing is fsynced,
and a `PermissionError` (a read-only checkpoint directory) is swallowed: no file, no error.

A killed process cannot remove its temporary file; `remove_stale_temporaries(directory)` does, at the
start of the next run. Paths with a protocol other than the local one (`s3://`, ...) are left to Lightning.
"""

from __future__ import annotations

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
    """A checkpoint could not be written; the previous file under its name, if any, is intact.

    An `OSError` because it is one, with the cause's `errno`, `strerror` and `filename`: code that
    already handles a full disk (`errno.ENOSPC`) keeps working, and `except OSError` still catches it.

    Attributes:
        path: the checkpoint that was not written.
        last_saved: the newest checkpoint this plugin wrote and did not remove ("" if none).
    """

    def __init__(self, path: str, cause: OSError, last_saved: str = "") -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        code = errno.errorcode.get(cause.errno, type(cause).__name__) if cause.errno else type(cause).__name__
        super().__init__(f"could not write checkpoint {path}: {reason} ({code})")
        self.errno, self.strerror, self.filename = cause.errno, cause.strerror, path
        self.path, self.last_saved = path, last_saved

    def __str__(self) -> str:
        return self.args[0]  # OSError would print "[Errno 28] ..." once errno is set


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, writing each checkpoint atomically; a failed write raises
    `CheckpointWriteError` and leaves no temporary file behind.

    The checkpoint is serialised in memory first, as Lightning does: `torch.save` into a file object
    reports a full disk as a `RuntimeError` without the `errno`, our own write reports the `OSError`.
    """

    def __init__(self) -> None:
        self.last_saved = ""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write `checkpoint` to `path` atomically.

        Raises:
            CheckpointWriteError: the file could not be written (no space, no permission, no directory).
        """
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
                try:
                    os.unlink(temporary)
                except OSError:
                    pass  # its directory is gone too, or the write was refused before it existed
            raise CheckpointWriteError(str(path), error, self.last_saved) from error
        _fsync_directory(directory)
        self.last_saved = str(path)

    def _write(self, file: IO[bytes], data: memoryview) -> None:
        """The one place checkpoint bytes reach the file; tests override it to fail or stall midway."""
        file.write(data)

    @override
    def load_checkpoint(self, path: Any, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> Any:
        """The checkpoint the CLI already read from `path` (`linreg_pl.checkpoints.read_checkpoint`), else
        Lightning's own read: a command reads its checkpoint once."""
        cached = cached_checkpoint(str(path), weights_only)
        return (
            cached if cached is not None else super().load_checkpoint(path, *args, weights_only=weights_only, **kwargs)
        )

    @override
    def remove_checkpoint(self, path: Any) -> None:
        """Remove a checkpoint; a file already gone is not an error, as in Lightning."""
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            return super().remove_checkpoint(path)
        try:
            os.unlink(local_path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # a sharded checkpoint; Lightning removes those recursively
            super().remove_checkpoint(path)
        if str(path) == self.last_saved:
            self.last_saved = ""


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; best effort, not every filesystem can open a directory."""
    try:
        handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files that killed writes left in `directory`; returns what it deleted.

    Only the temporary files of `.ckpt` checkpoints (`.<name>.ckpt.<random>.tmp`) last modified before
    `older_than` (seconds since the epoch; default: when this process imported this module) are deleted,
    so a write in progress in another process is left alone. A missing directory has nothing to delete.
    """
    cutoff = _IMPORTED_AT if older_than is None else older_than
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not _TEMPORARY_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            pass  # removed meanwhile
    return removed
