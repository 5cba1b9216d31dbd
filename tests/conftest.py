"""Every test runs on CPU, in its own temporary directory, with a quiet Trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from linreg_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(ROOT / "configs" / "default.yaml")
EXPERIMENT_DATA = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())["data"]["init_args"]
# after the test's own arguments, so a config file cannot turn the GPU or the summary back on
# the default experiment, streamed: 20,000 examples in chunks of 2,000, one generating thread
SMALL_STREAM = [
    "--config",
    str(ROOT / "configs" / "stream.yaml"),
    "--data.num_examples",
    "20000",
    "--data.chunk_size",
    "2000",
    # the seed's batch and lr, not stream.yaml's (for millions of examples): small runs, their step counts
    "--data.batch_size",
    "10",
    "--model.optimizer.init_args.lr",
    "0.03",
]
QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, request):
    # lightning_logs/ (logs, configs, checkpoints) lands in the test's own directory
    monkeypatch.chdir(tmp_path)
    # the CLI is driven through `main(args)`; pytest's own arguments are not for it
    monkeypatch.setattr("sys.argv", ["linreg-pl"])
    if request.node.get_closest_marker("picture") is None:
        # drawing fit.png is a third of a small in-process fit: only the tests marked `picture` look at the file;
        # elsewhere the report goes through the same steps but draws nothing (subprocesses draw as usual)
        monkeypatch.setattr("linreg_pl.regression.report.plot_fit", lambda path, **inputs: None)
    return tmp_path


def with_experiment(args: list[str]) -> list[str]:
    """A command line (subcommand first) with the regression experiment's config (configs/default.yaml) right after
    the subcommand, as the README's commands give it."""
    subcommand, *rest = args
    if subcommand not in ("fit", "validate", "test", "predict") or DEFAULT_CONFIG in rest:
        return list(args)
    return [subcommand, "--config", DEFAULT_CONFIG, *rest]


def run_cli(subcommand: str, *args: str, quiet: bool = True):
    """Run the CLI in-process and return the LightningCLI object (model, datamodule, trainer): the regression
    experiment (configs/default.yaml) and what `args` change."""
    return main(with_experiment([subcommand, *args, *(QUIET if quiet else [])]))


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


def exact_least_squares(features, targets):
    """The least-squares weight [num_inputs] and bias [] of `targets ≈ features·w + b` in float64, by torch's own
    solver (not the package's closed form): the optimum SGD on those rows approaches."""
    import torch

    design = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, targets.double().unsqueeze(1), driver="gelsd").solution[:, 0]
    return solution[:-1], solution[-1]


def assert_near_training_optimum(cli, tolerance: float = 1e-3) -> None:
    """The fitted model's weight and bias are within `tolerance` of the exact least-squares ones of its
    training split (the in-memory data modules' `splits["train"]`)."""
    features, targets = cli.datamodule.splits["train"][:2]
    weight, bias = cli.model.learned_parameters()
    exact_w, exact_b = exact_least_squares(features.cpu(), targets.cpu())
    error = max((weight.double().cpu() - exact_w).abs().max().item(), abs(float(bias) - float(exact_b)))
    assert error < tolerance, f"max |learned - least squares| = {error:.3g}"


def version_dir(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}"


def run_python(command: list[str], cwd: Path, **environment: str) -> str:
    """`python *command` in a process of its own that imports this checkout and the tests' modules (by class
    path, as DDP workers do); asserts it succeeds within 5 minutes and returns its output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **environment)
    result = subprocess.run(
        [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def interrupt_at(step: int, signum: int, *args: str, cwd: Path) -> tuple[int, str]:
    """Runs `python -m linreg_pl fit *args` in a process group of its own, sends `signum` to the whole group
    at global step `step` (as a terminal's Ctrl-C reaches every process), and returns the exit status and
    the output."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    wait = ["--trainer.callbacks+", "signal_probe.WaitForSignal", "--trainer.callbacks.step", str(step)]
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "linreg_pl", *with_experiment(["fit", *args]), *wait],
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
