"""Every test runs on CPU, in its own temporary directory, with a quiet Trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from linreg_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false"]
# a user's experiment (tests/user_models.py: a classifier on 3 blobs, 14 steps an epoch, 3 epochs): the core's tests
# run on it, so deleting the regression example deletes none of them
USER_EXPERIMENT = str(ROOT / "tests" / "configs" / "classifier.yaml")
STEPS_PER_EPOCH = 14  # 420 training points, batches of 32


def run_user(subcommand: str, *args: str):
    """Run the CLI in-process on the user's experiment and what `args` change; returns the LightningCLI object."""
    return main([subcommand, "--config", USER_EXPERIMENT, *args, *QUIET, "--trainer.enable_progress_bar", "false"])


@pytest.fixture(autouse=True)
def default_ctrl_c():
    """Ctrl-C as Python handles it in a terminal, whatever the runner inherited: a script's `pytest &`, nohup and some
    CI runners start it with SIGINT ignored, and the tests that press Ctrl-C in-process would see nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # lightning_logs/ (logs, configs, checkpoints) lands in the test's own directory
    monkeypatch.chdir(tmp_path)
    # the CLI is driven through `main(args)`; pytest's own arguments are not for it
    monkeypatch.setattr("sys.argv", ["linreg-pl"])
    return tmp_path


def one_line(capsys, *args: str) -> str:
    """Run the CLI on `args` (a quiet CPU run) expecting an error it reports itself: status 2, no traceback; returns
    the last line of stderr."""
    with pytest.raises(SystemExit) as stopped:
        main([*args, *QUIET])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def mount_tmpfs(directory: Path, size: str) -> None:
    """Mount a tmpfs of `size` on `directory`: a real filesystem that runs out of space. Without root this skips;
    in CI (CI=true) as root it must work, so there a failed mount fails the test instead of skipping it."""
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        reason = mounted.stderr.strip() if mounted.returncode else ""
    except FileNotFoundError:
        reason = "no `mount` command"
    if reason:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"CI runs as root but cannot mount a tmpfs: {reason}")
        pytest.skip(f"cannot mount a tmpfs here: {reason}")


def version_dir(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}"


def run_python(command: list[str], cwd: Path, **environment: str) -> str:
    """`python *command` in a process group of its own that imports this checkout and the tests' modules (by class
    path, as DDP workers do); asserts it succeeds within 5 minutes (else kills the group: no orphaned workers) and
    returns its output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **environment)
    process = subprocess.Popen([sys.executable, *command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=default_signal_handlers)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"no end within 300 s: {stdout[-3000:]}{stderr[-3000:]}") from None
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def default_signal_handlers() -> None:
    """For a child process: Ctrl-C and SIGTERM as a terminal gives them, whatever the test runner inherited (a
    script's `pytest &`, nohup and some CI runners start it with SIGINT ignored, which children inherit)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def interrupt_at(step: int, signum: int, *args: str, cwd: Path) -> tuple[int, str]:
    """Runs `python -m linreg_pl fit *args`, sends `signum` to its process group at global step `step`, and returns
    the exit status and the output (`signal_on`)."""
    wait = ["--trainer.callbacks+", "signal_probe.WaitForSignal", "--trainer.callbacks.step", str(step)]
    return signal_on(["-m", "linreg_pl", "fit", *args, *wait], "waiting at step", signum, cwd)


def signal_on(command: list[str], marker: str, signum: int, cwd: Path) -> tuple[int, str]:
    """Runs `python -u *command` as `run_python` does, sends `signum` to the whole process group once a line starts
    with `marker` (as a terminal's Ctrl-C reaches every process), and returns the exit status and the output."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    process = subprocess.Popen([sys.executable, "-u", *command], cwd=cwd, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=default_signal_handlers)  # fmt: skip
    # a run that hangs before or after the signal is killed with its group after 2 minutes
    watchdog = threading.Timer(120, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith(marker):
                break
        if process.poll() is None:
            os.killpg(process.pid, signum)
        output.append(process.communicate()[0])
    finally:
        watchdog.cancel()
    return process.returncode, "".join(output)
