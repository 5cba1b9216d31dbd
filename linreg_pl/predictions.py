"""The predictions file: what `predict_step` returns, one line per input row, in input order.

    python -m linreg_pl predict --config configs/default.yaml --ckpt_path last

The CLI adds `PredictionWriter` to every run under its own key: `--predictions.path out.csv` chooses the file,
`--predictions null` turns it off.
"""

from __future__ import annotations

import csv
import heapq
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from typing_extensions import override

from linreg_pl.errors import ConfigError


class PredictionWriter(BasePredictionWriter):
    """Writes what `predict_step` returns: CSV for tensors, JSON Lines for anything else.

    Tensors: `[n]` is column `prediction`, `[n, k]` columns `prediction_0` ... (more dimensions flattened), a tuple
    or dict of them columns by position or by key (`key_0`, ... for `[n, k]` values); a NaN is an empty cell.
    Anything else (lists of dicts, strings, nested structures) is one JSON line per row, `{"row": N, "prediction":
    ...}`: a list or tuple is one item per row, a dict of equal-length lists one dict per row, any other value one
    line for the batch. The first column (key), `row`, numbers the input rows: the batch's `row` field (a dict key or
    a named tuple's field) where it has one, else Lightning's batch indices, else the position in the loader.

    Each process appends its batches to a part file beside the output (`<file>.part-<rank>`); rank zero merges the
    parts by row number, line by line, writing a row repeated by a sampler's padding once. Predict dataloader 0
    writes `path`, dataloader `i` writes `<stem>_<i><suffix>` beside it. With several nodes, `path` must be on a
    filesystem they share.

    Args:
        path: the file to write; None: `predictions.csv` (`predictions.jsonl` for JSON Lines) in the run's log
            directory.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written: list[str] = []
        self._base = Path("predictions.csv")
        self._parts: dict[int, _Part] = {}

    def _output(self, dataloader_idx: int) -> Path:
        base = self._base
        return base if dataloader_idx == 0 else base.with_name(f"{base.stem}_{dataloader_idx}{base.suffix}")

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # every process asks for `log_dir`: under DDP it is a collective call
        self._base = Path(self.path or os.path.join(trainer.log_dir or ".", "predictions.csv"))
        self._base.parent.mkdir(parents=True, exist_ok=True)
        self._parts, self.written = {}, []

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        part = self._parts.get(dataloader_idx)
        if part is None:
            output = self._output(dataloader_idx)
            part = self._parts[dataloader_idx] = _Part(output.with_name(f"{output.name}.part-{trainer.global_rank}"))
        lines = _lines(prediction)
        rows = _carried_rows(batch)
        if rows is None and batch_indices:
            rows = torch.as_tensor(batch_indices)
        if rows is None:
            if trainer.world_size > 1:
                raise ConfigError(
                    "PredictionWriter: under several processes each predict batch needs its row numbers: use a "
                    "DataLoader (Lightning gives its indices) or give the batch a `row` field"
                )
            rows = torch.arange(part.position, part.position + len(lines[1]))
        part.write(*lines, rows.detach().cpu().reshape(-1).tolist())

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for part in self._parts.values():
            part.close()
        trainer.strategy.barrier()  # every part is complete
        if trainer.is_global_zero:
            for index in range(len(trainer.num_predict_batches)):
                self._merge(self._output(index), trainer.world_size, default_name=self.path is None)
        trainer.strategy.barrier()  # the parts are gone before anyone reads the files

    def _merge(self, path: Path, world_size: int, default_name: bool) -> None:
        parts = [path.with_name(f"{path.name}.part-{rank}") for rank in range(world_size)]
        handles = [part.open(newline="") for part in parts if part.exists()]
        try:
            firsts = [handle.readline() for handle in handles]
            json_lines = any(line.startswith('{"row": ') for line in firsts)
            if json_lines and default_name:
                path = path.with_suffix(".jsonl")
            headers = {line for line in firsts if line} if not json_lines else set()
            if len(headers) > 1:
                raise ConfigError(f"PredictionWriter: the processes' predictions have different columns: {headers}")
            streams = (
                handles if not json_lines else [_prepend(line, h) for line, h in zip(firsts, handles, strict=False)]
            )
            key = _json_row if json_lines else _csv_row
            count, previous = 0, None
            with path.open("w", newline="") as output:
                if not json_lines:
                    output.write(headers.pop() if headers else "row,prediction\r\n")
                for line in heapq.merge(*streams, key=key):
                    row = key(line)
                    if row != previous:  # a row a sampler padded in is written once
                        output.write(line)
                        count, previous = count + 1, row
        finally:
            for handle in handles:
                handle.close()
        for part in parts:
            part.unlink(missing_ok=True)
        self.written.append(str(path))
        print(f"wrote {count} predictions to {path}", flush=True)


class _Part:
    """One process's lines for one predict dataloader, sorted by row number when they arrive out of order."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, path.open("w", newline="")
        self.header: list[str] | None = None
        self.last, self.ascending, self.position = -1, True, 0

    def write(self, header: list[str] | None, values: list[Any], rows: list[int]) -> None:
        if len(rows) != len(values) and not (header is None and len(values) == 1):
            raise ConfigError(
                f"PredictionWriter: predict_step returned {len(values)} predictions for a batch of {len(rows)} rows; "
                "return one per input row (first dimension)"
            )
        rows = rows[: len(values)]
        self.position += len(rows)
        if not rows:
            return
        if self.header is None and header is not None:
            self.header = header
            csv.writer(self.file).writerow(header)
        elif header != self.header:
            raise ConfigError(f"PredictionWriter: predict_step's outputs changed from {self.header} to {header}")
        self.ascending &= rows[0] > self.last and all(a < b for a, b in zip(rows, rows[1:], strict=False))
        self.last = rows[-1]
        if header is None:
            self.file.writelines(
                json.dumps({"row": r, "prediction": v}, default=str) + "\n" for r, v in zip(rows, values, strict=True)
            )
        else:
            csv.writer(self.file).writerows([r, *v] for r, v in zip(rows, values, strict=True))

    def close(self) -> None:
        self.file.close()
        if not self.ascending:  # e.g. a user's shuffled loader: this process's share, sorted in memory
            first, *lines = self.path.read_text().splitlines(keepends=True)
            if first.startswith('{"row": '):
                self.path.write_text("".join(sorted([first, *lines], key=_json_row)))
            else:
                self.path.write_text(first + "".join(sorted(lines, key=_csv_row)))


def _lines(prediction: Any) -> tuple[list[str] | None, list[Any]]:
    """(header, one value list per row) for CSV, or (None, one JSON value per row) for anything not tensors."""
    try:
        names, columns = prediction_columns(prediction)
    except _NotTensors:
        plain = _plain(prediction)
        if isinstance(plain, list):
            return None, plain
        if isinstance(plain, dict) and plain and all(isinstance(v, list) for v in plain.values()):
            lengths = {len(v) for v in plain.values()}
            if len(lengths) == 1:
                return None, [dict(zip(plain, values, strict=False)) for values in zip(*plain.values(), strict=False)]
        return None, [plain]
    columns = [_cells(column) for column in columns]
    return ["row", *names], [list(values) for values in zip(*columns, strict=False)]


class _NotTensors(TypeError):
    pass


def prediction_columns(prediction: Any) -> tuple[list[str], list[Tensor]]:
    """Column names and 1-D columns (one value per row) of a `predict_step` output made of tensors."""
    names: list[str] = []
    columns: list[Tensor] = []

    def add(name: str, value: Any) -> None:
        if not isinstance(value, Tensor) or value.ndim == 0:
            raise _NotTensors(name)
        value = value.detach()
        value = (value.float() if value.is_floating_point() else value).cpu()
        flat = value.reshape(len(value), -1)
        if value.ndim == 1:
            names.append(name)
            columns.append(value)
            return
        names.extend(f"{name}_{j}" for j in range(flat.shape[1]))
        columns.extend(flat.unbind(1))

    if isinstance(prediction, Mapping):
        for key, value in prediction.items():
            add(str(key), value)
    elif isinstance(prediction, Sequence) and not isinstance(prediction, str):
        for i, value in enumerate(prediction):
            add(f"prediction_{i}", value)
    else:
        add("prediction", prediction)
    if not columns or len({len(c) for c in columns}) > 1:
        raise _NotTensors("columns of different lengths")
    return names, columns


def _plain(value: Any) -> Any:
    """`value` with tensors as (nested) lists, for JSON."""
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cells(column: Tensor) -> list[Any]:
    """A column's CSV cells: a NaN (a row the model could not predict) is an empty cell. The per-value check runs only
    for a column that holds one (predict's hot path is every row)."""
    values = column.tolist()
    if column.is_floating_point() and bool(column.isnan().any()):
        return [None if v != v else v for v in values]
    return values


def _carried_rows(batch: Any) -> Tensor | None:
    """The `row` field of a batch (a dict key or a named tuple's field), if it has one."""
    rows = batch.get("row") if isinstance(batch, Mapping) else getattr(batch, "row", None)
    return rows if isinstance(rows, Tensor) else None


def _prepend(first: str, handle: Any) -> Any:
    if first:
        yield first
    yield from handle


def _csv_row(line: str) -> int:
    return int(line.split(",", 1)[0])


def _json_row(line: str) -> int:
    return int(line[8 : line.index(",")])  # '{"row": N, "prediction": ...}', as json.dumps writes it
