"""Reading numeric tables from files: CSV, Parquet, .npz and .npy, whole or one piece at a time.

    columns = read_table("data/houses.csv")              # {name: float64 array}, every cell checked
    names = column_names("data/part-*.parquet")          # the header or schema only
    parts = ParquetRowGroups("data/parts/")              # row groups of a table bigger than memory
    first = parts.read(0)                                # {name: float32 array} of one row group
    ranges = CSVByteRanges("data/big.csv")               # a CSV bigger than memory, randomly accessible
    first = ranges.read(0)                                # {name: float32 array} of one byte range
    chunks = chunked_table("data/parts/", ["x", "y"])     # either of the two, by the path

A Parquet table is one file, a folder of part files (every `*.parquet` under it, sorted, skipping names
that start with `_` or `.`) or a glob such as `data/part-*.parquet`. CSV and Parquet need pyarrow, the
`tables` extra (pip install -e ".[tables]"); .npz and .npy need only numpy. A .npy file holds a 2-D
array whose columns are named "0", "1", ...

Every unusable input is a ConfigError of one line naming the file and, where it applies, the column and
either the *line* of the file (1-based, the header is line 1, blank lines count) or the *data row*
(1-based, the header and blank lines do not count). Nothing here imports Lightning or torch.
"""

from __future__ import annotations

import csv
import glob
import importlib
import importlib.util
import io
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from linreg_pl.errors import ConfigError

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
NUMPY_SUFFIXES = (".npz", ".npy")
# the separators a CSV header is searched for; the one that occurs in the header line is used
SEPARATORS = (",", ";", "\t")
_GLOB_CHARACTERS = frozenset("*?[")
_SEPARATOR_NAMES = {",": "','", ";": "';'", "\t": "tab"}


def read_table(path: str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a CSV, Parquet (file, folder or glob), .npz or .npy table as float64 arrays.

    Float64 so that statistics (means, variances, least squares) are exact enough; cast to float32 for
    training. Every cell must be a finite number.

    Args:
        path: the file, or for Parquet a folder of part files or a glob.
        columns: the columns to read, in this order; None reads every column in file order.
    """
    source = Path(path)
    if _is_parquet(path):
        return _read_parquet(path, columns)
    if not source.is_file():
        raise ConfigError(f"data file {path!r} does not exist")
    suffix = source.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        table = _read_numpy(source, columns)
    else:
        table = _read_csv(source, columns)
    lengths = {len(values) for values in table.values()}
    if not table or lengths == {0}:
        raise ConfigError(f"{path}: the file holds no data rows")
    if len(lengths) > 1:
        raise ConfigError(f"{path}: columns have different lengths {sorted(lengths)}")
    for name, values in table.items():
        _check_finite(values, f"{path}: column {name!r}", first_row=1)
    return table


def column_names(path: str) -> list[str]:
    """The table's column names, from the CSV header, the Parquet schema or the numpy header only."""
    source = Path(path)
    if _is_parquet(path):
        pq = _pyarrow_module("pyarrow.parquet", path)
        with _open_parquet(pq, _parquet_files(path)[0]) as parquet:
            return list(parquet.schema_arrow.names)
    if not source.is_file():
        raise ConfigError(f"data file {path!r} does not exist")
    suffix = source.suffix.lower()
    if suffix == ".npz":
        with _load_numpy(source) as archive:
            return list(archive.files)
    if suffix == ".npy":
        array = _load_numpy(source, mmap_mode="r")
        _check_npy_shape(source, array)
        return [str(i) for i in range(array.shape[1])]
    return _csv_layout(source).names


# what a CSV cell holding no value says; `linreg_pl.regression.encoding` counts the same texts as missing
MISSING_TEXT = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


def read_arrow(path: str, columns: list[str] | None = None) -> Any:
    """Columns of a CSV, Parquet, .npz or .npy table as a `pyarrow.Table` of their own types (numbers, text,
    booleans, Parquet dictionaries), missing cells null: the input of `linreg_pl.regression.encoding`.

    A CSV column's type is pyarrow's inference; an empty cell or one of `MISSING_TEXT` is null. Other errors
    (a missing file or column, a row of the wrong length) are the one-line errors of `read_table`.
    """
    pa = _pyarrow_module("pyarrow", path)
    source = Path(path)
    if _is_parquet(path):
        pq = _pyarrow_module("pyarrow.parquet", path)
        parts = []
        for file in _parquet_files(path):
            with _open_parquet(pq, file) as parquet:
                if columns is None:
                    columns = list(parquet.schema_arrow.names)
                _check_parquet_columns(file, parquet.schema_arrow, columns)
                parts.append(parquet.read(columns=columns))
        table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    elif not source.is_file():
        raise ConfigError(f"data file {path!r} does not exist")
    elif source.suffix.lower() in NUMPY_SUFFIXES:
        table = pa.table(_read_numpy(source, columns))
    else:
        import pyarrow.csv as pa_csv

        layout = _csv_layout(source)
        columns = _check_csv_columns(source, layout, columns)
        try:
            table = pa_csv.read_csv(source, **_typed_csv_options(layout, columns, {}))
        except pa.ArrowInvalid as error:
            raise _first_csv_problem(source, layout, columns, error) from None
    if table.num_rows == 0:
        raise ConfigError(f"{path}: the file holds no data rows")
    return table


def _typed_csv_options(layout: _CSVLayout, columns: list[str], types: dict[str, Any], **read: Any) -> dict[str, Any]:
    """pyarrow.csv options that keep missing cells null: `types` fixes some columns' types, pyarrow infers the rest."""
    import pyarrow.csv as pa_csv

    options = _csv_options(layout, columns, "string", **read)
    options["convert_options"] = pa_csv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        null_values=list(MISSING_TEXT),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    return options


class RowGroup(NamedTuple):
    """One row group of a Parquet table: where it is and how many rows it holds."""

    file: str
    index: int  # within its file
    num_rows: int
    first_row: int  # 0-based row of the file where the group starts


class ParquetRowGroups:
    """A Parquet table (one file, a folder of part files or a glob) as its list of row groups.

    Built from the files' footers only, so that a table bigger than memory can be read one row group at a
    time, in any order, by any process: the object holds paths and counts, no open file, and pickles.
    The columns are checked here (present in every file, integer or floating point), so a bad file fails
    before training starts, not mid-epoch; a bad cell fails when its row group is read, naming the file,
    the row group (0-based, within the file) and the data row (1-based, within the file).

    Args:
        path: the Parquet file, folder or glob.
        columns: the columns to read, in this order; None takes every column of the first file.
    """

    def __init__(self, path: str, columns: list[str] | None = None) -> None:
        pq = _pyarrow_module("pyarrow.parquet", path)
        self.path = path
        self.files = _parquet_files(path)
        self.row_groups: list[RowGroup] = []
        for file in self.files:
            with _open_parquet(pq, file) as parquet:
                schema, metadata = parquet.schema_arrow, parquet.metadata
            if columns is None:
                columns = list(schema.names)
            _check_parquet_columns(file, schema, columns)
            first_row = 0
            for index in range(metadata.num_row_groups):
                num_rows = metadata.row_group(index).num_rows
                self.row_groups.append(RowGroup(file, index, num_rows, first_row))
                first_row += num_rows
        self.columns: list[str] = list(columns or [])
        self.num_rows = sum(group.num_rows for group in self.row_groups)

    def __len__(self) -> int:
        return len(self.row_groups)

    @property
    def row_counts(self) -> list[int]:
        """Rows in each row group, from the footers."""
        return [group.num_rows for group in self.row_groups]

    def read(
        self, i: int, columns: list[str] | None = None, dtype: type[np.floating] = np.float32
    ) -> dict[str, np.ndarray]:
        """Row group `i` (0-based, across all files) as arrays of `dtype`; every cell must be finite.

        Args:
            i: index into `row_groups`.
            columns: a subset of `self.columns`, in this order; None reads them all.
            dtype: np.float32 (training, half the memory) or np.float64 (statistics).
        """
        columns = self.columns if columns is None else columns
        unknown = [name for name in columns if name not in self.columns]
        if unknown:
            raise ConfigError(f"{self.path}: columns {unknown} were not among those checked, {self.columns}")
        pq = _pyarrow_module("pyarrow.parquet", self.path)
        group = self.row_groups[i]
        with pq.ParquetFile(group.file) as parquet:
            table = parquet.read_row_group(group.index, columns=columns)
        where = f"{group.file}: row group {group.index}"
        return {
            name: _parquet_column(table.column(name), f"{where}, column {name!r}", group.first_row + 1, dtype)
            for name in columns
        }

    def read_arrow(self, i: int, columns: list[str], types: dict[str, Any] | None = None) -> Any:
        """Row group `i` as a `pyarrow.Table` of the columns' own types, missing cells null (`types` is
        for the CSV reader's sake and unused here: a Parquet schema fixes the types)."""
        pq = _pyarrow_module("pyarrow.parquet", self.path)
        group = self.row_groups[i]
        with pq.ParquetFile(group.file) as parquet:
            return parquet.read_row_group(group.index, columns=columns)


def chunked_table(path: str, columns: list[str], chunk_bytes: int = 1 << 24) -> ParquetRowGroups | CSVByteRanges:
    """A table read one chunk at a time: a Parquet table as its row groups, a CSV as byte ranges of about
    `chunk_bytes`. Both have `row_counts`, `read(i, columns, dtype)` and `len()`."""
    if _is_parquet(path):
        return ParquetRowGroups(path, columns)
    if Path(path).suffix.lower() in NUMPY_SUFFIXES:
        raise ConfigError(f"{path}: only Parquet and CSV tables stream; read a {Path(path).suffix} table in memory")
    return CSVByteRanges(path, columns, chunk_bytes)


class ByteRange(NamedTuple):
    """One piece of a CSV file: whole lines, from byte `start` up to (not including) byte `stop`."""

    start: int
    stop: int
    num_rows: int  # data rows (blank lines do not count)
    first_line: int  # 1-based line of the file where the range starts (the header is line 1)


class CSVByteRanges:
    """A CSV file as byte ranges of about `chunk_bytes`, each made of whole lines, to be parsed one at a time,
    in any order, by any process: random access to a CSV bigger than memory, as `ParquetRowGroups` gives
    to Parquet.

    One pass over the file (reading `chunk_bytes` at a time, no parsing) ends each range at the first line
    break after `chunk_bytes` and counts its data rows; `read(i)` then parses range i alone with pyarrow,
    giving it the header's names. The header, separator and columns are checked here; the cells when
    their range is read, and a bad one is named by file, line and column.

    Limit: a line break inside a quoted cell would be taken for the end of a row (numeric tables have
    none; pyarrow's row count then disagrees with the pass's, which is reported). Lines end with
    `\n` or `\r\n`.

    Args:
        path: the CSV file.
        columns: the columns to read, in this order; None reads every column.
        chunk_bytes: bytes per range, about (each ends at a line break).
    """

    def __init__(self, path: str, columns: list[str] | None = None, chunk_bytes: int = 1 << 24) -> None:
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"data file {path!r} does not exist")
        _pyarrow_module("pyarrow", path)
        self.path, self.file = path, source
        self.layout = _csv_layout(source)
        self.columns = _check_csv_columns(source, self.layout, columns)
        self.ranges: list[ByteRange] = []
        with source.open("rb") as handle:
            position, line = len(handle.readline()), 2
            while block := handle.read(chunk_bytes):
                if not block.endswith(b"\n"):
                    block += handle.readline()  # up to the end of the line
                self.ranges.append(ByteRange(position, position + len(block), _count_rows(block), line))
                position += len(block)
                line += block.count(b"\n")
        self.num_rows = sum(r.num_rows for r in self.ranges)
        if self.num_rows == 0:
            raise ConfigError(f"{path}: the file holds no data rows")

    def __len__(self) -> int:
        return len(self.ranges)

    @property
    def row_counts(self) -> list[int]:
        """Data rows in each range, from the first pass."""
        return [r.num_rows for r in self.ranges]

    def read(
        self, i: int, columns: list[str] | None = None, dtype: type[np.floating] = np.float32
    ) -> dict[str, np.ndarray]:
        """Range `i` as arrays of `dtype`; every cell must be finite.

        Args:
            i: index into `ranges`.
            columns: a subset of `self.columns`, in this order; None reads them all.
            dtype: np.float32 (training, half the memory) or np.float64 (statistics).
        """
        pa = _pyarrow_module("pyarrow", self.path)
        import pyarrow.csv as pa_csv

        columns = self.columns if columns is None else columns
        _check_requested(self.file, columns, self.columns)
        piece = self.ranges[i]
        with self.file.open("rb") as handle:
            handle.seek(piece.start)
            data = handle.read(piece.stop - piece.start)
        options = _csv_options(self.layout, columns, pa.float64(), use_threads=True, skip_rows=0)
        try:
            table = pa_csv.read_csv(pa.BufferReader(data), **options)
        except pa.ArrowInvalid as error:
            raise _first_csv_problem(self.file, self.layout, columns, error, part=(data, piece.first_line)) from None
        if table.num_rows != piece.num_rows:
            raise ConfigError(
                f"{self.file}: the lines from line {piece.first_line} parse as {table.num_rows} rows, not the "
                f"{piece.num_rows} lines counted: a quoted cell with a line break? A streamed CSV cannot hold one; "
                "read the table in memory (configs/csv.yaml) or convert it to Parquet"
            )
        first_row = sum(r.num_rows for r in self.ranges[:i]) + 1
        return {
            name: _as_finite(table.column(name).to_numpy(), f"{self.file}: column {name!r}", first_row, dtype)
            for name in columns
        }

    def read_arrow(self, i: int, columns: list[str], types: dict[str, Any] | None = None) -> Any:
        """Range `i` as a `pyarrow.Table`, missing cells null; `types` fixes columns' types (so that every
        range agrees on which columns are text), pyarrow infers the others."""
        pa = _pyarrow_module("pyarrow", self.path)
        import pyarrow.csv as pa_csv

        _check_requested(self.file, columns, self.columns)
        piece = self.ranges[i]
        with self.file.open("rb") as handle:
            handle.seek(piece.start)
            data = handle.read(piece.stop - piece.start)
        options = _typed_csv_options(self.layout, columns, types or {}, use_threads=True, skip_rows=0)
        try:
            table = pa_csv.read_csv(pa.BufferReader(data), **options)
        except pa.ArrowInvalid as error:
            raise _first_csv_problem(self.file, self.layout, columns, error, part=(data, piece.first_line)) from None
        if table.num_rows != piece.num_rows:
            raise ConfigError(
                f"{self.file}: the lines from line {piece.first_line} parse as {table.num_rows} rows, not the "
                f"{piece.num_rows} lines counted: a quoted cell with a line break? A streamed CSV cannot hold one; "
                "read the table in memory (configs/csv.yaml) or convert it to Parquet"
            )
        return table


def _count_rows(block: bytes) -> int:
    """Lines of `block` that are not blank (pyarrow skips blank lines); `\r\n` endings allowed."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if len(data) and data[-1] != ord("\n"):
        ends = np.append(ends, len(data))  # a last line without a line break
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    carriage = np.zeros(len(ends), dtype=bool)
    single = lengths == 1
    carriage[single] = data[starts[single]] == ord("\r")
    return int(len(ends) - np.count_nonzero(lengths == 0) - np.count_nonzero(carriage))


# ---- CSV ------------------------------------------------------------------------------------------------


class _CSVLayout(NamedTuple):
    separator: str
    names: list[str]  # stripped of surrounding whitespace


def _csv_layout(file: Path) -> _CSVLayout:
    """The separator and column names from the header line, the file's first line."""
    with file.open("rb") as handle:
        line = handle.readline()
        rest = handle.read(1 << 16) if not line.strip() else b""
    line = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
    if not line.strip():
        if rest.strip():
            raise ConfigError(f"{file}: line 1 is blank; the first line must be the header row of column names")
        raise ConfigError(f"{file}: the file is empty; expected a header row of column names and data rows")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: the header line is not UTF-8 text") from None
    found = [separator for separator in SEPARATORS if separator in text]
    if len(found) > 1:
        counts = ", ".join(f"{_SEPARATOR_NAMES[s]} ({text.count(s)}x)" for s in found)
        raise ConfigError(
            f"{file}: cannot tell the separator: the header line holds {counts}; "
            "it must hold only one of ',' ';' tab, so rename the columns that contain the others"
        )
    separator = found[0] if found else ","
    names = [name.strip() for name in next(csv.reader([text], delimiter=separator))]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{file}: the header names columns {repeated} more than once")
    return _CSVLayout(separator, names)


def _check_csv_columns(file: Path, layout: _CSVLayout, columns: list[str] | None) -> list[str]:
    if columns is None:
        return layout.names
    _check_requested(file, columns, layout.names)
    return list(columns)


def _csv_options(
    layout: _CSVLayout, columns: list[str], cell_type: Any, on_invalid_row: Any = None, **read: Any
) -> dict[str, Any]:
    """Keyword arguments for pyarrow.csv.read_csv/open_csv: our header, one cell type, no missing values."""
    import pyarrow.csv as pa_csv

    return {
        # our header (stripped names), so pyarrow checks every row against it and skips its line
        "read_options": pa_csv.ReadOptions(**{"column_names": layout.names, "skip_rows": 1, **read}),
        "parse_options": pa_csv.ParseOptions(delimiter=layout.separator, invalid_row_handler=on_invalid_row),
        # an empty or "NA" cell is an error, not a missing value
        "convert_options": pa_csv.ConvertOptions(
            column_types={name: cell_type for name in columns},
            include_columns=columns,
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            # text cells (only _first_csv_problem reads them) may hold any bytes: not UTF-8 is not a number
            check_utf8=False,
        ),
    }


def _read_csv(file: Path, columns: list[str] | None) -> dict[str, np.ndarray]:
    pa = _pyarrow_module("pyarrow", str(file))
    import pyarrow.csv as pa_csv

    layout = _csv_layout(file)
    columns = _check_csv_columns(file, layout, columns)
    try:
        table = pa_csv.read_csv(file, **_csv_options(layout, columns, pa.float64(), use_threads=True))
    except pa.ArrowInvalid as error:
        raise _first_csv_problem(file, layout, columns, error) from None
    return {name: table.column(name).to_numpy() for name in columns}


def _first_csv_problem(
    file: Path,
    layout: _CSVLayout,
    columns: list[str],
    error: Exception,
    block_size: int = 1 << 22,
    part: tuple[bytes, int] | None = None,
) -> ConfigError:
    """After pyarrow failed on the file: the error for its first row of the wrong length or non-number cell.

    Reads the file again from the start, in one thread so that rows arrive in order and pyarrow numbers them,
    with every cell as text; then a column's first cell that does not convert is found by halving. `part`,
    (the bytes of a `CSVByteRanges` range, its first line), searches only that range, which has no header.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    invalid: list[Any] = []

    def on_invalid_row(row: Any) -> str:
        invalid.append(row)
        return "error"

    skip_rows, source = (1, file) if part is None else (0, pa.BufferReader(part[0]))
    options = _csv_options(
        layout, columns, pa.string(), on_invalid_row, use_threads=False, block_size=block_size, skip_rows=skip_rows
    )
    first_row = 0
    try:
        for batch in pa_csv.open_csv(source, **options):
            firsts = [(_first_non_number(batch.column(name)), i) for i, name in enumerate(columns)]
            bad = [(row, i) for row, i in firsts if row is not None]
            if bad:
                row, i = min(bad)  # the first row, and in it the leftmost column
                cell = batch.column(columns[i]).cast(pa.binary())[row].as_py().decode(errors="backslashreplace")
                line = _file_line(file, record=first_row + row + 1 + skip_rows, part=part)
                return ConfigError(f"{file}: line {line}, column {columns[i]!r}: {cell!r} is not a number")
            first_row += batch.num_rows
    except pa.ArrowInvalid as reread_error:
        if invalid:
            row = invalid[0]
            line = _file_line(file, record=row.number, part=part)
            return ConfigError(
                f"{file}: line {line} has {row.actual_columns} cells, the header has {row.expected_columns}"
            )
        error = reread_error
    # pyarrow refused the file for a reason of its own (e.g. text that is not UTF-8): give its words
    return ConfigError(f"{file}: not a readable CSV file ({str(error).splitlines()[0]})")


def _first_non_number(cells: Any) -> int | None:
    """Index of the first text cell that pyarrow does not convert to a float, or None if every cell converts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # the CSV reader ignores spaces and tabs around a number; a cast does not
    cells = pc.ascii_trim(cells, " \t")

    def converts(part: Any) -> bool:
        try:
            pc.cast(part, pa.float64())
        except pa.ArrowInvalid:
            return False
        return True

    if converts(cells):
        return None
    low, high = 0, len(cells)  # the first bad cell lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if converts(cells.slice(low, middle - low)):
            low = middle
        else:
            high = middle
    return low


def _file_line(file: Path, record: int, part: tuple[bytes, int] | None = None) -> int:
    """The file line of pyarrow's `record`-th row (1-based, header included, or of the range `part`), which
    skips blank lines."""
    seen = 0
    first_line = 1 if part is None else part[1]
    with file.open("rb") if part is None else io.BytesIO(part[0]) as handle:
        for line_number, line in enumerate(handle, start=first_line):
            if line.rstrip(b"\r\n"):
                seen += 1
                if seen == record:
                    return line_number
    return record + first_line - 1


# ---- Parquet --------------------------------------------------------------------------------------------


def _is_parquet(path: str) -> bool:
    source = Path(path)
    if source.is_dir():
        return True
    if not source.exists() and _GLOB_CHARACTERS & set(path):
        if source.suffix.lower() not in PARQUET_SUFFIXES:
            raise ConfigError(f"{path}: a glob must name Parquet part files ({', '.join(PARQUET_SUFFIXES)})")
        return True
    return source.suffix.lower() in PARQUET_SUFFIXES


def _parquet_files(path: str) -> list[str]:
    """The files of a Parquet table given as a file, a folder or a glob, in sorted order."""
    source = Path(path)
    if source.is_dir():
        files = sorted(
            str(file)
            for file in source.rglob("*")
            if file.is_file()
            and file.suffix.lower() in PARQUET_SUFFIXES
            and not any(part.startswith(("_", ".")) for part in file.relative_to(source).parts)
        )
        if not files:
            raise ConfigError(f"folder {path!r} holds no Parquet files ({', '.join(PARQUET_SUFFIXES)})")
        return files
    if source.is_file():
        return [path]
    if _GLOB_CHARACTERS & set(path):
        files = sorted(file for file in glob.glob(path, recursive=True) if Path(file).is_file())
        if not files:
            raise ConfigError(f"no file matches {path!r}")
        return files
    raise ConfigError(f"data file {path!r} does not exist")


def _open_parquet(pq: Any, file: str) -> Any:
    import pyarrow as pa

    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as error:
        raise ConfigError(f"{file}: not a readable Parquet file ({str(error).splitlines()[0]})") from None


def _check_parquet_columns(file: str, schema: Any, columns: list[str], numbers_only: bool = False) -> None:
    import pyarrow as pa

    _check_requested(Path(file), columns, list(schema.names))
    for name in columns:
        kind = schema.field(name).type
        if numbers_only and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ConfigError(f"{file}: column {name!r} has type {kind}; a column must hold integers or floats")
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_dictionary(kind)
        ):
            raise ConfigError(
                f"{file}: column {name!r} has type {kind}; a column must hold numbers, text, booleans or categories"
            )


def _read_parquet(path: str, columns: list[str] | None) -> dict[str, np.ndarray]:
    """Every file into arrays allocated once from the footers' row counts (no second copy of the table)."""
    files = _parquet_files(path)
    pq = _pyarrow_module("pyarrow.parquet", path)
    num_rows = []
    for file in files:  # the footers first, one file open at a time (a folder may hold thousands)
        with _open_parquet(pq, file) as parquet:
            schema, metadata = parquet.schema_arrow, parquet.metadata
        if columns is None:
            columns = list(schema.names)
        _check_parquet_columns(file, schema, columns, numbers_only=True)
        num_rows.append(metadata.num_rows)
    if sum(num_rows) == 0:
        raise ConfigError(f"{path}: the table holds no data rows")
    table = {name: np.empty(sum(num_rows), dtype=np.float64) for name in columns}
    start = 0
    for file, rows in zip(files, num_rows, strict=True):
        with pq.ParquetFile(file) as parquet:
            part = parquet.read(columns=columns)
        for name in columns:
            values = _parquet_column(part.column(name), f"{file}: column {name!r}", 1, np.float64)
            table[name][start : start + rows] = values
        start += rows
    return table


def _parquet_column(column: Any, where: str, first_row: int, dtype: type[np.floating]) -> np.ndarray:
    """A Parquet column as a finite array of `dtype`; `first_row` is the file's data row of its first cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ConfigError(f"{where} has type {column.type}; read as numbers, a column must hold integers or floats")
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise ConfigError(f"{where} has an empty (null) value in data row {first_row + row}")
    return _as_finite(column.to_numpy(), where, first_row, dtype)


# ---- numpy ----------------------------------------------------------------------------------------------


def _load_numpy(file: Path, **options: Any) -> Any:
    try:
        return np.load(file, allow_pickle=False, **options)
    except (ValueError, OSError) as error:
        raise ConfigError(f"{file}: not a readable {file.suffix.lower()} file ({error})") from None


def _check_npy_shape(file: Path, array: np.ndarray) -> None:
    if array.ndim != 2:
        raise ConfigError(f"{file}: a .npy table must be 2-D (rows x columns), got shape {array.shape}")


def _read_numpy(file: Path, columns: list[str] | None) -> dict[str, np.ndarray]:
    if file.suffix.lower() == ".npz":
        with _load_numpy(file) as archive:
            names = list(archive.files)
            if columns is not None:
                _check_requested(file, columns, names)
                names = list(columns)
            raw = {name: archive[name] for name in names}  # an .npz loads a member only when it is asked for
    else:
        array = _load_numpy(file)
        _check_npy_shape(file, array)
        names = [str(i) for i in range(array.shape[1])]
        if columns is not None:
            _check_requested(file, columns, names)
            names = list(columns)
        raw = {name: array[:, int(name)] for name in names}
    table = {}
    for name, values in raw.items():
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
            raise ConfigError(f"{file}: column {name!r} must be a 1-D numeric array, got {values.dtype} {values.shape}")
        table[name] = values.astype(np.float64)
    return table


# ---- shared ---------------------------------------------------------------------------------------------


def _pyarrow_module(name: str, path: str) -> Any:
    """Import a pyarrow module, or say in one line that CSV/Parquet need the `tables` extra."""
    if importlib.util.find_spec("pyarrow") is None:
        suffix = Path(path).suffix.lower() or ".parquet"
        raise ConfigError(f'{path}: reading {suffix} tables needs the tables extra: pip install -e ".[tables]"')
    return importlib.import_module(name)


def _check_requested(file: Path, columns: list[str], available: list[str]) -> None:
    missing = [name for name in columns if name not in available]
    if missing:
        raise ConfigError(f"{file}: columns {missing} not found; the file has columns {available}")


def _check_finite(values: np.ndarray, where: str, first_row: int) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        row = first_row + int(np.argmin(finite))
        raise ConfigError(f"{where} has a NaN or infinite value in data row {row}; every cell must be a finite number")


def _as_finite(values: np.ndarray, where: str, first_row: int, dtype: type[np.floating]) -> np.ndarray:
    """`values` as `dtype`, checked finite; a float64 number too large for float32 is its own error."""
    _check_finite(values, where, first_row)
    with np.errstate(over="ignore"):  # reported below, with the value
        converted = values.astype(dtype, copy=False)
    finite = np.isfinite(converted)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ConfigError(
            f"{where}: {float(values[row])!r} in data row {first_row + row} is too large for {np.dtype(dtype)}"
        )
    return converted
