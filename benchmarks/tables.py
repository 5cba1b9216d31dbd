"""Reading a 1M-row x 11-column table: the Python `csv` reader this project used, against `linreg_pl.regression.tables`.

    python benchmarks/tables.py                  # 1,000,000 rows x 11 columns of random floats
    python benchmarks/tables.py --rows 200000    # smaller, quicker

Writes the table once as CSV and as Parquet to a temporary folder, then times, in this process:
  (a) baseline: the `csv.reader` + `float()` loop of `linreg_pl.regression.data._read_csv` before `tables.py`,
      copied below unchanged (float32 torch tensors) plus the old finite check;
  (b) `read_table` on the CSV (pyarrow.csv, multi-threaded, float64, every cell checked);
  (c) `read_table` on the Parquet file;
  (d) `CSVByteRanges` over the CSV: the first pass and every range, float32 (streaming);
  (e) `ParquetRowGroups.read` over every row group (float32, streaming).
Best of --repeats runs each except the baseline (one run); the ratios are against (a).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch

from linreg_pl.regression.tables import CSVByteRanges, ParquetRowGroups, read_table


# ---- (a) the baseline: linreg_pl.regression.data._read_csv as it was, error handling included ------------------------
def baseline_read_csv(file: Path) -> dict[str, torch.Tensor]:
    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{file}: the file is empty; expected a header row of column names and data rows")
        header = [name.strip() for name in header]
        values: list[list[float]] = [[] for _ in header]
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{file}: line {line} has {len(row)} cells, the header has {len(header)}")
            for name, column, cell in zip(header, values, row, strict=True):
                try:
                    column.append(float(cell))
                except ValueError:
                    raise ValueError(f"{file}: line {line}, column {name!r}: {cell!r} is not a number") from None
    columns = {name: torch.tensor(column, dtype=torch.float32) for name, column in zip(header, values, strict=True)}
    for name, tensor in columns.items():  # the old read_table's finite check
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{file}: column {name!r} has a NaN or infinite value")
    return columns


def best_of(repeats: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(args.columns - 1)] + ["y"]
    data = {name: rng.normal(0, 1, args.rows) for name in names}
    with tempfile.TemporaryDirectory() as folder:
        csv_path, parquet_path = Path(folder) / "table.csv", Path(folder) / "table.parquet"
        pa_csv.write_csv(pa.table(data), csv_path)  # shortest round-trip text of each float64
        pq.write_table(pa.table(data), parquet_path)
        print(
            f"table: {args.rows:,} rows x {args.columns} columns; CSV {os.path.getsize(csv_path) / 2**20:.0f} MiB, "
            f"Parquet {os.path.getsize(parquet_path) / 2**20:.0f} MiB, "
            f"{pq.ParquetFile(parquet_path).metadata.num_row_groups} row group(s); "
            f"{os.cpu_count()} CPUs, pyarrow {pa.__version__}, {pa.cpu_count()} pyarrow threads"
        )

        baseline, old = best_of(1, lambda: baseline_read_csv(csv_path))
        timings = {"(a) baseline csv.reader + float()": baseline}
        timings["(b) read_table CSV (pyarrow)"], new = best_of(args.repeats, lambda: read_table(str(csv_path)))
        timings["(c) read_table Parquet"], from_parquet = best_of(args.repeats, lambda: read_table(str(parquet_path)))

        def every_byte_range() -> int:
            ranges = CSVByteRanges(str(csv_path))
            return sum(len(ranges.read(i)["y"]) for i in range(len(ranges)))

        timings["(d) CSVByteRanges, float32"], _ = best_of(args.repeats, every_byte_range)

        def every_row_group() -> int:
            groups = ParquetRowGroups(str(parquet_path))
            return sum(len(groups.read(i)["y"]) for i in range(len(groups)))

        timings["(e) ParquetRowGroups.read, float32"], _ = best_of(args.repeats, every_row_group)

        for name in names:  # the same numbers every way (the baseline kept float32)
            assert np.array_equal(new[name], data[name]) and np.array_equal(from_parquet[name], data[name])
            assert np.array_equal(old[name].numpy(), data[name].astype(np.float32))
        for label, seconds in timings.items():
            print(f"{label:38s} {seconds:7.3f} s  {baseline / seconds:6.1f}x the baseline")


if __name__ == "__main__":
    main()
