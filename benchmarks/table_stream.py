"""A Parquet table bigger than memory, streamed: peak memory of the whole process tree, training speed
against the in-memory path, and the load time of a 1M-row CSV.

    python benchmarks/table_stream.py                       # 40M x 10 (1.8 GB as float32), ~10 minutes
    python benchmarks/table_stream.py --rows 4000000        # quicker

Sections, in one run so the ratios come from the same machine state:
  memory  write a --rows x 10 Parquet table in row groups of 1M rows (one group in memory at a time),
          then `python -m linreg_pl fit --config configs/default.yaml --config configs/table-stream.yaml ...
          --trainer.max_epochs 1 --data.batch_size 4096` in a child process; peak PSS of the process tree
          (target: < 1 GiB).
  speed   a 2M x 10 Parquet table (20 row groups) fitted in memory (configs/csv.yaml) and streamed
          (configs/table-stream.yaml), 3 epochs, batch 4096; the report's steady samples/s (target:
          streamed >= 0.7x in memory).
  csv     benchmarks/tables.py's 1M x 11 CSV: `read_table` (in memory) against reading every chunk of
          `CSVByteRanges` (first pass included) and against the old csv.reader baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
# this checkout's linreg_pl, here and in the child processes, whatever is installed
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
from tables import baseline_read_csv, best_of  # noqa: E402
from throughput import _reported_rate, run_measured  # noqa: E402

from linreg_pl.regression.tables import CSVByteRanges, read_table  # noqa: E402

NAMES = [f"x{i}" for i in range(10)]


def write_parquet(path: Path, rows: int, group: int, seed: int = 0) -> None:
    """y = X·w + 1 + noise, float32, written one row group at a time."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, len(NAMES)).astype(np.float32)
    schema = pa.schema([(name, pa.float32()) for name in [*NAMES, "y"]])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            x = rng.standard_normal((n, len(NAMES)), dtype=np.float32)
            y = x @ weight + 1 + rng.normal(0, 0.1, n).astype(np.float32)
            writer.write_table(pa.table({**{name: x[:, i] for i, name in enumerate(NAMES)}, "y": y}, schema=schema))


def fit(config: str, path: Path, epochs: int, work: str) -> tuple[float, int, str]:
    command = [
        sys.executable, "-m", "linreg_pl", "fit", "--config", str(ROOT / "configs" / "default.yaml"),
        "--config", str(ROOT / "configs" / config),
        "--data.path", str(path), "--data.target", "y", "--trainer.max_epochs", str(epochs),
        "--data.batch_size", "4096", "--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    print("$ " + " ".join(command[1:]), flush=True)
    return run_measured(command, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000_000)
    parser.add_argument("--speed-rows", type=int, default=2_000_000)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as work:
        big = Path(work) / "big.parquet"
        start = time.perf_counter()
        write_parquet(big, args.rows, 1_000_000)
        print(f"wrote {args.rows:,} x 10 in {time.perf_counter() - start:.0f} s, {big.stat().st_size / 2**30:.2f} GiB")
        wall, peak, output = fit("table-stream.yaml", big, 1, work)
        rate = _reported_rate(output)
        lines.append(
            f"| streamed, {args.rows:,} x 10, 1 epoch | {peak / 2**30:.2f} GiB | {rate / 1e6:.2f} M/s | {wall:.0f} s |"
        )
        print(lines[-1], flush=True)
        big.unlink()

        small = Path(work) / "small.parquet"
        write_parquet(small, args.speed_rows, args.speed_rows // 20, seed=1)  # 20 chunks: 2 val, 2 test
        rates = {}
        for name, config in (
            ("in memory (csv.yaml)", "csv.yaml"),
            ("streamed (table-stream.yaml)", "table-stream.yaml"),
        ):
            wall, peak, output = fit(config, small, 3, work)
            rates[name] = _reported_rate(output)
            lines.append(
                f"| {name}, {args.speed_rows:,} x 10, 3 epochs | {peak / 2**30:.2f} GiB "
                f"| {rates[name] / 1e6:.2f} M/s | {wall:.0f} s |"
            )
            print(lines[-1], flush=True)
        streamed_over_memory = rates["streamed (table-stream.yaml)"] / rates["in memory (csv.yaml)"]

        table_csv = Path(work) / "table.csv"
        rng = np.random.default_rng(0)
        pa_csv.write_csv(pa.table({n: rng.normal(0, 1, args.csv_rows) for n in [*NAMES, "y"]}), table_csv)
        baseline, _ = best_of(1, lambda: baseline_read_csv(table_csv))
        in_memory, _ = best_of(3, lambda: read_table(str(table_csv)))

        def every_range() -> int:
            ranges = CSVByteRanges(str(table_csv))
            return sum(len(ranges.read(i)["y"]) for i in range(len(ranges)))

        streamed, count = best_of(3, every_range)
        assert count == args.csv_rows
    print("\n| run | peak memory (process tree, PSS) | training samples/s | wall |")
    print("|---|---|---|---|")
    print("\n".join(lines))
    print(f"\nstreamed / in-memory training samples/s: {streamed_over_memory:.2f}x")
    print(
        f"{args.csv_rows:,} x 11 CSV: csv.reader baseline {baseline:.2f} s; read_table {in_memory:.2f} s "
        f"({baseline / in_memory:.1f}x faster); CSVByteRanges, first pass + every range {streamed:.2f} s "
        f"({streamed / in_memory:.2f}x read_table's time, {baseline / streamed:.1f}x faster than the baseline)"
    )


if __name__ == "__main__":
    main()
