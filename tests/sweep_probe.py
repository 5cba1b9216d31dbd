"""A callback for the sweep's kill test (tests/test_sweep.py), imported by class path in the sweep's process
(PYTHONPATH=tests)."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback
from typing_extensions import override


class PauseInRun(Callback):
    """Counts the fits that start in `counter` (a file); the `run`-th (from 1) prints `waiting in run <run>` at global
    step `step` and waits up to `timeout` seconds, so that a test can kill the process mid-trial at a known place
    whatever the machine's speed. Later fits, in this process or another, run through."""

    def __init__(self, counter: str, run: int, step: int = 2, timeout: float = 60.0) -> None:
        self.counter, self.run, self.step, self.timeout = Path(counter), run, step, timeout
        self.number = 0

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        self.number = int(self.counter.read_text()) + 1 if self.counter.exists() else 1
        self.counter.write_text(str(self.number))

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.number == self.run and trainer.global_step == self.step:
            print(f"waiting in run {self.run}", flush=True)
            # until killed, or a Ctrl-C or SIGTERM that Lightning turns into `received_sigterm` (ending the step)
            deadline = time.monotonic() + self.timeout
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.01)
