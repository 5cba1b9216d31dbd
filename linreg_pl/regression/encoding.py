"""Table columns as the model's inputs: numbers as they are, text, category and yes/no columns as indicator
columns (R's treatment coding), and missing values found and counted.

    encoding = find_encoding(table, ["carat", "cut"], "diamonds.csv")   # {"carat": None, "cut": [its levels]}
    inputs = encode(table, encoding, "diamonds.csv")                     # float64 [n, d], what is missing or unseen
    input_names(encoding)                                                # ["carat", "cut=Good", "cut=Ideal", ...]

An `Encoding` maps each feature column, in input order, to None (a number column) or its levels: the distinct
texts of the training rows, sorted. The first level is the reference and gets no column, so the design keeps
full rank beside the bias; every other level gets a 0/1 column named `column=level`. Booleans are the texts
`false`/`true`, Parquet dictionary columns their values. Missing: a null cell (CSV: empty, NA, N/A, NaN, nan,
null, NULL), a NaN number, or one of those texts in a text column. `table` is a `pyarrow.Table` from
`linreg_pl.regression.tables.read_arrow` (or a chunk of one); nothing here imports torch or Lightning.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from linreg_pl.errors import ConfigError
from linreg_pl.regression.tables import MISSING_TEXT

Encoding = dict[str, "list[str] | None"]
# a text column with more levels than this share of its rows (and more than a handful) names the rows
IDENTIFIER_SHARE = 0.9
IDENTIFIER_MIN_LEVELS = 10


class Encoded(NamedTuple):
    """A table's rows as model inputs, and per column which rows cannot be encoded."""

    features: np.ndarray  # float64 [n, d]: NaN in a missing number; a missing or unseen level's row is 0
    missing: dict[str, np.ndarray]  # column -> bool [n]
    unseen: dict[str, np.ndarray]  # text column -> bool [n]: a level the encoding does not hold

    def unusable(self) -> np.ndarray:
        """Rows with a missing value or an unseen level in any column."""
        bad = np.zeros(len(self.features), dtype=bool)
        for mask in [*self.missing.values(), *self.unseen.values()]:
            bad |= mask
        return bad


def is_text(kind: Any) -> bool:
    """Whether a column of this pyarrow type is encoded by its levels (anything but numbers and all-null)."""
    import pyarrow as pa

    return not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind))


def texts(column: Any) -> Any:
    """A column's cells as trimmed text, the missing ones null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.is_in(strings, value_set=pa.array(MISSING_TEXT)), pa.scalar(None, pa.string()), strings)


def levels_in(column: Any) -> list[str]:
    """The distinct non-missing texts of a column, sorted (by code point)."""
    import pyarrow.compute as pc

    found = pc.unique(texts(column)).drop_null()
    return pc.take(found, pc.array_sort_indices(found)).to_pylist()


def check_levels(name: str, levels: list[str], rows: int, where: str) -> None:
    """Refuses a text column with a level for almost every row: an identifier, not a category."""
    if len(levels) > IDENTIFIER_MIN_LEVELS and len(levels) > IDENTIFIER_SHARE * rows:
        raise ConfigError(
            f"{where}: column {name!r} holds {len(levels)} different texts in {rows} rows: an identifier, not a "
            "category; leave it out by listing the columns to use in `features` (--data.features '[a, b]')"
        )


def find_encoding(table: Any, features: list[str], where: str) -> Encoding:
    """Each feature column's kind and, for text, its levels among the rows of `table` (the training rows)."""
    encoding: Encoding = {}
    for name in features:
        column = table.column(name)
        if not is_text(column.type):
            encoding[name] = None
            continue
        levels = levels_in(column)
        check_levels(name, levels, len(column) - int(texts(column).null_count), where)
        encoding[name] = levels
    return encoding


def input_names(encoding: Encoding) -> list[str]:
    """The model's input names: a number column's name, `column=level` for each level but the first."""
    names: list[str] = []
    for name, levels in encoding.items():
        names.extend([name] if levels is None else [f"{name}={level}" for level in levels[1:]])
    return names


def numbers(column: Any, name: str, where: str) -> np.ndarray:
    """A number column as float64, missing cells NaN; an infinite value, or text, is an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if is_text(column.type) and not pa.types.is_boolean(column.type):
        cells = texts(column)
        try:
            column = pc.cast(cells, pa.float64())
        except pa.ArrowInvalid:
            numeric = pc.match_substring_regex(cells, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
            row = pc.index(pc.invert(numeric.fill_null(True)), True).as_py()
            raise ConfigError(
                f"{where}: column {name!r}: {cells[row].as_py()!r} in data row {row + 1} is not a number"
            ) from None
    values = pc.cast(column, pa.float64()).to_numpy()
    values = np.array(values, dtype=np.float64)  # writable, nulls as NaN
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.argmax(infinite)) + 1
        raise ConfigError(f"{where}: column {name!r} has an infinite value in data row {row}")
    return values


def encode(table: Any, encoding: Encoding, where: str) -> Encoded:
    """`table`'s rows as float64 model inputs [n, d] (d = len(input_names(encoding))), with what is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[np.ndarray] = []
    missing: dict[str, np.ndarray] = {}
    unseen: dict[str, np.ndarray] = {}
    for name, levels in encoding.items():
        column = table.column(name)
        if levels is None:
            values = numbers(column, name, where)
            missing[name] = np.isnan(values)
            parts.append(values[:, None])
            continue
        cells = texts(column)
        codes = pc.index_in(cells, value_set=pa.array(levels, pa.string())).fill_null(-1).to_numpy()
        missing[name] = np.asarray(pc.is_null(cells).to_numpy(zero_copy_only=False), dtype=bool)
        unseen[name] = (codes < 0) & ~missing[name]
        parts.append((codes[:, None] == np.arange(1, len(levels))).astype(np.float64))
    return Encoded(np.concatenate(parts, axis=1), missing, unseen)


def column_counts(masks: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, int]:
    """Rows flagged in each column (only among `rows`, a boolean mask, if given), the columns with any."""
    counts = {name: int(np.count_nonzero(mask if rows is None else mask & rows)) for name, mask in masks.items()}
    return {name: count for name, count in counts.items() if count}


def describe(counts: dict[str, int]) -> str:
    """`x1: 2, color: 1`"""
    return ", ".join(f"{name}: {count}" for name, count in counts.items())


def target_values(table: Any, target: str, where: str) -> np.ndarray:
    """The target column as float64, missing cells NaN."""
    return numbers(table.column(target), target, where)
