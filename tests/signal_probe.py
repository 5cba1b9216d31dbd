"""Interrupting a training process at a known step: `interrupt_at` for the tests, and `WaitForSignal`, which it
loads by class path in that process (PYTHONPATH=tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lightning.pytorch import Callback
from typing_extensions import override

ROOT = Path(__file__).resolve().parents[1]


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


def interrupt_at(step: int, signum: int, *args: str, cwd: Path) -> tuple[int, str]:
    """Runs `python -m linreg_pl fit *args` in a process group of its own, sends `signum` to the whole group
    at global step `step` (as a terminal's Ctrl-C reaches every process), and returns the exit status and
    the output."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    wait = ["--trainer.callbacks+", f"{__name__}.WaitForSignal", "--trainer.callbacks.step", str(step)]
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "linreg_pl", "fit", *args, *wait],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # a run that hangs before or after the signal is killed with its group after 2 minutes
    watchdog = threading.Timer(120, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith("waiting at step"):
                break
        if process.poll() is None:
            os.killpg(process.pid, signum)
        output.append(process.communicate()[0])
    finally:
        watchdog.cancel()
    return process.returncode, "".join(output)
