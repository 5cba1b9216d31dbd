"""A sweep's cost per trial against a plain `fit` of the same config, side by side in one run.

    python benchmarks/sweep_overhead.py                  # the default experiment, 20 trials, 6 rounds
    python benchmarks/sweep_overhead.py --trials 20 --rounds 3 --processes

In-process (what a sweep runs): `main(["fit", "--config", configs/default.yaml])` `--trials` times, against
`main(["sweep", ...])` with `run_cap` = `--trials` and one parameter fixed at the config's own value (lr 0.03), so
that every trial is that same fit. The sweep's time is the whole command: parsing the config once, opening the
SQLite study, asking and telling each trial, trials.csv after each, and at the end the table, best.yaml and the
two pictures. Each block runs in a fresh process after one warm-up fit; rounds alternate which kind goes first;
the figures are the medians over rounds of (sweep time / trials) / (plain time / trials) - 1, in wall-clock time and
in CPU time (this process's, all threads: less moved by other jobs on a shared machine).

`--processes` adds the command-line view: `python -m linreg_pl fit` run `--trials` times against one
`python -m linreg_pl sweep` of `--trials` trials (which pays the imports once).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "default.yaml")
QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false"]
SWEEP = """method: random
metric: {name: val/loss, goal: minimize}
run_cap: %d
parameters:
  model.init_args.optimizer.init_args.lr: {value: 0.03}  # the config's own value: every trial is the plain fit
"""


def timed(call) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all its threads) of `call()`."""
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        call()
    return time.perf_counter() - start, time.process_time() - cpu


def block(kind: str, trials: int, folder: Path) -> tuple[float, float]:
    """One measurement in this (fresh) process: a warm-up fit, then `trials` plain fits or a sweep of `trials`;
    returns the wall-clock and CPU seconds per trial."""
    from linreg_pl.cli import main

    main(["fit", "--config", CONFIG, *QUIET, "--trainer.default_root_dir", str(folder / "warm-up")])
    if kind == "plain":
        root = str(folder / "plain")
        seconds = timed(lambda: [main(["fit", "--config", CONFIG, *QUIET, "--trainer.default_root_dir", root])
                                 for _ in range(trials)])  # fmt: skip
        return seconds[0] / trials, seconds[1] / trials
    sweep = folder / "same.yaml"
    sweep.write_text(SWEEP % trials)
    args = ["sweep", "--config", CONFIG, "--sweep", str(sweep), *QUIET, "--trainer.default_root_dir", str(folder)]
    seconds = timed(lambda: main(args))
    return seconds[0] / trials, seconds[1] / trials


def in_process(trials: int, rounds: int, folder: Path) -> None:
    # each block in a process of its own, both kinds from the same state; the order alternates between rounds,
    # as repeated in-process fits slow down a little over a process's life
    wall, cpu = [], []
    for round_ in range(rounds):
        seconds = {}
        for kind in ("plain", "sweep") if round_ % 2 == 0 else ("sweep", "plain"):
            command = [sys.executable, __file__, "--block", kind, "--trials", str(trials)]
            command += ["--folder", str(folder / f"{kind}{round_}")]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            seconds[kind] = [float(value) for value in result.stdout.split()[-2:]]
        (plain_wall, plain_cpu), (sweep_wall, sweep_cpu) = seconds["plain"], seconds["sweep"]
        wall.append(sweep_wall / plain_wall - 1)
        cpu.append(sweep_cpu / plain_cpu - 1)
        line = f"round {round_}: per trial, plain fit {plain_wall:.3f} s ({plain_cpu:.3f} s CPU), sweep "
        line += f"{sweep_wall:.3f} s ({sweep_cpu:.3f} s CPU): {wall[-1]:+.1%} wall, {cpu[-1]:+.1%} CPU"
        print(line, flush=True)
    line = f"in-process, {trials} trials: a sweep costs {statistics.median(wall):+.1%} wall-clock "
    print(line + f"({statistics.median(cpu):+.1%} CPU time) per trial over a plain fit (medians of {rounds} rounds)")


def processes(trials: int, folder: Path) -> None:
    environment = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "linreg_pl", *args, *QUIET], cwd=folder, env=environment, check=True,
                       capture_output=True)  # fmt: skip

    sweep = folder / "same_process.yaml"
    sweep.write_text(SWEEP % trials)
    fit_s = timed(lambda: [run("fit", "--config", CONFIG) for _ in range(trials)]) / trials
    sweep_s = timed(lambda: run("sweep", "--config", CONFIG, "--sweep", str(sweep))) / trials
    print(
        f"processes, {trials} trials: `fit` {fit_s:.2f} s a command, `sweep` {sweep_s:.2f} s a trial "
        f"({sweep_s / fit_s - 1:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)  # configs/sweep.yaml's run_cap
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--processes", action="store_true", help="also time the commands as processes")
    parser.add_argument("--block", choices=("plain", "sweep"), help=argparse.SUPPRESS)  # one measurement
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.block:
        print(*block(options.block, options.trials, options.folder))
        return
    import lightning
    import optuna
    import torch

    print(f"torch {torch.__version__}, lightning {lightning.__version__}, optuna {optuna.__version__}, CPU threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        in_process(options.trials, options.rounds, Path(folder))
        if options.processes:
            processes(options.trials, Path(folder))


if __name__ == "__main__":
    main()
