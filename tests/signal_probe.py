"""Helpers for `conftest.interrupt_at`, imported by class path in the training process (PYTHONPATH=tests)."""

from __future__ import annotations

import time

from lightning.pytorch import Callback
from typing_extensions import override


class WaitForSignal(Callback):
    """At global step `step`, prints `waiting at step <step>` and waits (up to `timeout` seconds) for a signal,
    so that it lands at a known step whatever the machine's speed: SIGTERM (directly or through Ctrl-C) ends
    the wait, a KeyboardInterrupt raises out of it."""

    def __init__(self, step: int, timeout: float = 60.0) -> None:
        self.step = step
        self.timeout = timeout

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        print(f"waiting at step {self.step}", flush=True)
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.01)
