"""Checkpoint writers that fail on purpose, for `--trainer.plugins checkpoint_faults.<class>` in tests."""

from __future__ import annotations

import errno
import os
from typing import IO, Any

from typing_extensions import override

from linreg_pl.checkpoint_io import AtomicCheckpointIO


class DiskFullOnSecondLast(AtomicCheckpointIO):
    """Writes half the bytes of the second `last.ckpt` and then fails as a full disk does."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self._failing = False

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if os.path.basename(str(path)) == "last.ckpt":
            self.saves += 1
            self._failing = self.saves == 2
        super().save_checkpoint(checkpoint, path, storage_options)

    @override
    def _write(self, file: IO[bytes], data: memoryview) -> None:
        if not self._failing:
            return file.write(data)
        file.write(data[: len(data) // 2])
        file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class RecordingCheckpointIO(AtomicCheckpointIO):
    """AtomicCheckpointIO that records every path it wrote, in `written` (a class attribute: the CLI
    builds the instance)."""

    written: list[str] = []

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        RecordingCheckpointIO.written.append(str(path))
