"""The predictions file: what `predict_step` returns, one line per input row, in input order. The CLI adds it to
every run under its own key: `--predictions.path out.csv` chooses the file, `--predictions null` turns it off.

    python -m linreg_pl predict --config configs/default.yaml --ckpt_path last
"""

import contextlib
import csv
import heapq
import itertools
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

JSON_START = '{"row": '  # how json.dumps begins each line of JSON Lines


class PredictionWriter(BasePredictionWriter):
    """Writes what `predict_step` returns: CSV for tensors (`[n]`: column `prediction`; `[n, k]`: `prediction_0`, ...;
    a tuple or dict of them: by position or key; NaN: an empty cell), JSON Lines `{"row": N, "prediction": ...}` for
    anything else (per item of a list, per row of a dict of lists, else per batch). `row` numbers the input rows: the
    batch's `row` field, else Lightning's batch indices, else the position in the loader.

    Each process appends to `<file>.part-<rank>`; rank zero merges the parts by row, writing a row a sampler padded in
    once. Dataloader `i` > 0 writes `<stem>_<i><suffix>`. With several nodes, `path` must be on a shared filesystem.

    Args:
        path: the file to write; None: `predictions.csv` (`.jsonl` for JSON Lines) in the run's log directory.
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
        self, trainer: Trainer, module: Any, prediction: Any, indices: Any, batch: Any, _: int, loader: int
    ) -> None:
        if (part := self._parts.get(loader)) is None:
            output = self._output(loader)
            part = self._parts[loader] = _Part(output.with_name(f"{output.name}.part-{trainer.global_rank}"))
        header, values = _lines(prediction)
        rows = batch.get("row") if isinstance(batch, Mapping) else getattr(batch, "row", None)
        if not isinstance(rows, Tensor):
            if trainer.world_size > 1 and not indices:
                raise ConfigError(
                    "PredictionWriter: under several processes each predict batch needs its row numbers: use a "
                    "DataLoader (Lightning gives its indices) or give the batch a `row` field"
                )
            rows = torch.as_tensor(indices or range(part.position, part.position + len(values)))
        part.write(header, values, rows.detach().cpu().reshape(-1).tolist())

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for part in self._parts.values():
            part.close()
        trainer.strategy.barrier()  # every part is complete
        failure = None
        try:
            for index in range(len(trainer.num_predict_batches)) if trainer.is_global_zero else ():
                self._merge(self._output(index), trainer.world_size)
        except Exception as error:  # every process raises it, none waits for rank zero forever
            failure = error
        if (failure := trainer.strategy.broadcast(failure)) is not None:  # and the files are complete when it returns
            raise failure

    def _merge(self, path: Path, world_size: int) -> None:
        parts = [path.with_name(f"{path.name}.part-{rank}") for rank in range(world_size)]
        with contextlib.ExitStack() as stack:
            handles = [
                stack.enter_context(part.open(newline="")) for part in parts if part.exists() and part.stat().st_size
            ]
            firsts = [handle.readline() for handle in handles]
            json_lines = any(line.startswith(JSON_START) for line in firsts)
            headers = set() if json_lines else {line for line in firsts if line}
            if len(headers) > 1:
                raise ConfigError(f"PredictionWriter: the processes' predictions have different columns: {headers}")
            if json_lines and self.path is None:
                path = path.with_suffix(".jsonl")
            # a CSV part's first line is its header; a JSON Lines part's is a row
            streams = [itertools.chain([f] if json_lines else [], h) for f, h in zip(firsts, handles, strict=True)]
            count, previous = 0, None
            with path.open("w", newline="") as output:
                if not json_lines:
                    output.write(headers.pop() if headers else "row\r\n")  # no rows: no column is known
                for line in heapq.merge(*streams, key=_row):
                    if (row := _row(line)) != previous:  # a row a sampler padded in is written once
                        output.write(line)
                        count, previous = count + 1, row
        for part in parts:
            part.unlink(missing_ok=True)
        self.written.append(str(path))
        print(f"wrote {count} predictions to {path}", flush=True)


class _Part:
    """One process's lines for one predict dataloader, sorted by row if they came out of order."""

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
            lines = (json.dumps({"row": r, "prediction": v}, default=str) for r, v in zip(rows, values, strict=True))
            self.file.writelines(line + "\n" for line in lines)
        else:
            csv.writer(self.file).writerows([r, *v] for r, v in zip(rows, values, strict=True))

    def close(self) -> None:
        self.file.close()
        if not self.ascending:  # e.g. a user's shuffled loader: this process's share, sorted in memory
            lines = self.path.read_text().splitlines(keepends=True)
            header = [] if lines[0].startswith(JSON_START) else lines[:1]
            self.path.write_text("".join(header + sorted(lines[len(header) :], key=_row)))


def _lines(prediction: Any) -> tuple[list[str] | None, list[Any]]:
    """(header, cells of each row) for tensors, (None, a JSON value per row) for anything else."""
    try:
        names, columns = prediction_columns(prediction)
    except TypeError:
        plain = _plain(prediction)
        if isinstance(plain, dict) and plain and all(isinstance(v, list) for v in plain.values()):
            if len({len(v) for v in plain.values()}) == 1:
                return None, [dict(zip(plain, values, strict=True)) for values in zip(*plain.values(), strict=True)]
        return None, plain if isinstance(plain, list) else [plain]
    return ["row", *names], [list(values) for values in zip(*map(_cells, columns), strict=True)]


def prediction_columns(prediction: Any) -> tuple[list[str], list[Tensor]]:
    """Column names and 1-D columns of a `predict_step` output of tensors; `TypeError` for anything else."""
    named = {"prediction": prediction}
    if isinstance(prediction, Mapping):
        named = {str(k): v for k, v in prediction.items()}
    elif isinstance(prediction, Sequence) and not isinstance(prediction, str):
        named = {f"prediction_{i}": v for i, v in enumerate(prediction)}
    names, columns = [], []
    for name, value in named.items():
        if not isinstance(value, Tensor) or value.ndim == 0:
            raise TypeError(name)
        value = (value.detach().float() if value.is_floating_point() else value.detach()).cpu()
        flat = value.reshape(len(value), -1)
        names += [name] if value.ndim == 1 else [f"{name}_{j}" for j in range(flat.shape[1])]
        columns += list(flat.unbind(1))
    if not columns or len({len(c) for c in columns}) > 1:
        raise TypeError("columns of different lengths")
    return names, columns


def _plain(value: Any) -> Any:
    """`value` with tensors as (nested) lists, for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.detach().cpu().tolist() if isinstance(value, Tensor) else value


def _cells(column: Tensor) -> list[Any]:
    """A column's CSV cells, a NaN an empty cell (checked per value only in a column that holds one: the hot path)."""
    values = column.tolist()
    if column.is_floating_point() and bool(column.isnan().any()):
        return [None if v != v else v for v in values]
    return values


def _row(line: str) -> int:
    return int(line.removeprefix(JSON_START).split(",", 1)[0])  # a CSV line's first cell, a JSON line's "row"
