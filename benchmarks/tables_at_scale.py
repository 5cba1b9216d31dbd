"""Tables at scale with the configs as shipped: a 50,000-row CSV fitted in memory (configs/csv.yaml) and a
streamed Parquet table (configs/table-stream.yaml), each timed whole and compared with the exact optimum.

    python benchmarks/tables_at_scale.py                      # 50,000-row CSV; 4M x 10 Parquet streamed
    python benchmarks/tables_at_scale.py --stream-rows 1000000 --csv-args --data.batch_size 512

Sections:
  csv     50,000 rows of 10 correlated number columns (scales 0.5-20, offsets up to ±50) and 3 text columns
          (3, 5 and 8 levels), noise half the target's variance; `fit --config configs/default.yaml --config
          configs/csv.yaml` in a child process: wall time of the whole command and the report's training
          objective, learned / exact optimum (target: under 30 s on 2 cores, within 0.5%).
  stream  --stream-rows x 10 Parquet in row groups of --stream-rows / 16 (16 chunks: 2 val, 2 test), 1 epoch of
          `fit --config configs/default.yaml --config configs/table-stream.yaml`: the report's training
          samples/s, learned / exact optimum after that one epoch, and the epoch time of a 40M-row table
          *extrapolated* from that rate (40M x 0.8 training rows / samples/s; not measured).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# this checkout's linreg_pl, here and in the child processes, whatever is installed
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
from table_stream import write_parquet  # noqa: E402
from throughput import _reported_rate, run_measured  # noqa: E402


def write_mixed_csv(path: Path, rows: int, seed: int = 0) -> None:
    """10 correlated number columns and 3 text columns; y linear in them plus noise of half its variance."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(rows, 1))
    x = (rng.normal(size=(rows, 10)) + 1.5 * shared) * rng.uniform(0.5, 20, 10) + rng.uniform(-50, 50, 10)
    texts = {f"t{k}": rng.integers(0, levels, rows) for k, levels in enumerate((3, 5, 8))}
    signal = x @ (rng.normal(size=10) / x.std(0))
    for codes in texts.values():
        signal = signal + rng.normal(size=codes.max() + 1)[codes]
    y = signal + rng.normal(scale=signal.std(), size=rows) + 3.0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"x{i}" for i in range(10)), *texts, "y"])
        columns = [*x.T, *([f"level-{c}" for c in codes] for codes in texts.values()), y]
        writer.writerows(zip(*columns, strict=True))


def fit(configs: list[str], path: Path, work: str, *extra: str) -> tuple[float, str]:
    command = [sys.executable, "-m", "linreg_pl", "fit", "--config", str(ROOT / "configs" / "default.yaml")]
    for config in configs:
        command += ["--config", str(ROOT / "configs" / config)]
    command += ["--data.path", str(path), "--data.target", "y", "--trainer.accelerator", "cpu", *extra]
    print("$ " + " ".join(command[1:]), flush=True)
    wall, _, output = run_measured(command, work)
    if "learned / exact optimum" not in output:
        raise RuntimeError(output[-3000:])
    return wall, output


def ratio(output: str) -> float:
    return float(re.search(r"learned / exact optimum = ([0-9.]+)", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv-rows", type=int, default=50_000)
    parser.add_argument("--stream-rows", type=int, default=4_000_000)
    parser.add_argument("--skip", choices=["csv", "stream"], help="leave one section out")
    parser.add_argument("--csv-args", nargs=argparse.REMAINDER, default=[], help="more CLI arguments for the csv fit")
    args = parser.parse_args()
    lines = []
    quiet = ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
    with tempfile.TemporaryDirectory() as work:
        if args.skip != "csv":
            table = Path(work) / "mixed.csv"
            write_mixed_csv(table, args.csv_rows)
            wall, output = fit(["csv.yaml"], table, work, *quiet, *args.csv_args)
            lines.append(
                f"csv.yaml, {args.csv_rows:,} rows (10 number + 3 text columns), whole command: {wall:.1f} s; "
                f"training objective learned / exact optimum = {ratio(output):.5f}"
            )
            print(lines[-1], flush=True)
        if args.skip != "stream":
            big = Path(work) / "big.parquet"
            write_parquet(big, args.stream_rows, args.stream_rows // 16)
            wall, output = fit(["table-stream.yaml"], big, work, *quiet, "--trainer.max_epochs", "1")
            rate = _reported_rate(output)
            train_rows = 40_000_000 * 0.8
            lines.append(
                f"table-stream.yaml, {args.stream_rows:,} x 10 Parquet, 1 epoch: {rate / 1e6:.2f} M samples/s, "
                f"whole command {wall:.0f} s, learned / exact optimum = {ratio(output):.5f}; "
                f"extrapolated (not measured): a 40M-row table's epoch ({train_rows / 1e6:.0f}M training rows) "
                f"~{train_rows / rate / 60:.1f} min at that rate"
            )
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
