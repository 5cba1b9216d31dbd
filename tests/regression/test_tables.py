"""Reading tables: values come back exactly, pieces cover every row once, every bad input is one exact line."""

from __future__ import annotations

import importlib.util
import pickle
from itertools import pairwise

import numpy as np
import pytest
from example_helpers import no_picture  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)

from linreg_pl.errors import ConfigError
from linreg_pl.regression.tables import CSVByteRanges, ParquetRowGroups, column_names, read_table

pa = pytest.importorskip("pyarrow")  # the `tables` extra
pq = pytest.importorskip("pyarrow.parquet")


def stream_csv(path: str, columns: list[str] | None = None, chunk_bytes: int = 1 << 24, dtype=np.float32):
    """Every byte range of a CSV read as the streamed table module reads it, in file order."""
    ranges = CSVByteRanges(path, columns, chunk_bytes)
    return [ranges.read(i, dtype=dtype) for i in range(len(ranges))]


def table(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"rooms": rng.normal(0, 1, n), "area": rng.normal(1000, 300, n), "price": rng.normal(7, 3, n)}


def write_csv(path, columns: dict[str, np.ndarray], separator: str = ",", header: str | None = None) -> None:
    # repr() of a float64 reads back as the same bits
    lines = [header if header is not None else separator.join(columns)]
    lines += [separator.join(repr(float(v)) for v in row) for row in zip(*columns.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def write_parts(folder, columns: dict[str, np.ndarray], bounds=(0, 17, 30, 50), row_group_size: int = 6) -> None:
    """Part files of the table's rows [bounds[k], bounds[k+1]), each in row groups of `row_group_size`."""
    folder.mkdir()
    for k, (start, stop) in enumerate(pairwise(bounds)):
        part = pa.table({name: values[start:stop] for name, values in columns.items()})
        pq.write_table(part, folder / f"part-{k}.parquet", row_group_size=row_group_size)
    (folder / "_SUCCESS").write_text("")  # what Spark leaves beside its parts; not a part


def assert_same(read: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(read) == list(expected)
    for name, values in expected.items():
        assert read[name].dtype == np.float64
        np.testing.assert_array_equal(read[name], values)


# ---- reading --------------------------------------------------------------------------------------------


def assert_errors(cases) -> None:
    """Each call raises a ConfigError whose text is exactly the expected line."""
    for call, expected in cases:
        with pytest.raises(ConfigError) as error:
            call()
        assert str(error.value) == expected


def test_csv_values_are_the_numbers_written(tmp_path):
    expected = table()
    write_csv(tmp_path / "t.csv", expected)
    assert_same(read_table(str(tmp_path / "t.csv")), expected)
    assert column_names(str(tmp_path / "t.csv")) == ["rooms", "area", "price"]
    # requested columns come in the requested order
    assert_same(read_table(str(tmp_path / "t.csv"), ["price", "rooms"]), {k: expected[k] for k in ("price", "rooms")})


def test_a_byte_order_mark_spaces_around_names_and_cells_and_blank_lines_are_ignored(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbf x , y \n1, 2\n\n 3 ,4\r\n")
    assert_same(read_table(str(tmp_path / "t.csv")), {"x": np.array([1.0, 3.0]), "y": np.array([2.0, 4.0])})
    assert column_names(str(tmp_path / "t.csv")) == ["x", "y"]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_the_separator_is_found_in_the_header(separator, tmp_path):
    expected = table()
    write_csv(tmp_path / "t.csv", expected, separator)
    assert_same(read_table(str(tmp_path / "t.csv")), expected)


def test_a_single_column_file_needs_no_separator(tmp_path):
    (tmp_path / "t.csv").write_text("y\n1.5\n-2\n")
    assert_same(read_table(str(tmp_path / "t.csv")), {"y": np.array([1.5, -2.0])})


def test_npz_and_npy_tables(tmp_path):
    expected = table()
    np.savez(tmp_path / "t.npz", **expected)
    np.save(tmp_path / "t.npy", np.stack(list(expected.values()), axis=1).astype(np.float32))
    assert_same(read_table(str(tmp_path / "t.npz")), expected)
    assert column_names(str(tmp_path / "t.npz")) == ["rooms", "area", "price"]
    assert column_names(str(tmp_path / "t.npy")) == ["0", "1", "2"]
    as_npy = read_table(str(tmp_path / "t.npy"), ["2", "0"])
    assert_same(as_npy, {"2": expected["price"].astype(np.float32), "0": expected["rooms"].astype(np.float32)})


def test_parquet_file_folder_and_glob_give_the_table_written(tmp_path):
    expected = table()
    pq.write_table(pa.table(expected), tmp_path / "t.parquet", row_group_size=7)
    write_parts(tmp_path / "parts", expected)
    for path in ("t.parquet", "parts", "parts/part-*.parquet"):
        assert_same(read_table(str(tmp_path / path)), expected)
        assert column_names(str(tmp_path / path)) == ["rooms", "area", "price"]
    assert_same(read_table(str(tmp_path / "parts"), ["area"]), {"area": expected["area"]})


def test_integer_parquet_columns_become_floats(tmp_path):
    pq.write_table(pa.table({"n": pa.array([1, 2, 3], pa.int32()), "y": [0.5, 1.5, 2.5]}), tmp_path / "t.parquet")
    assert_same(
        read_table(str(tmp_path / "t.parquet")), {"n": np.array([1.0, 2.0, 3.0]), "y": np.array([0.5, 1.5, 2.5])}
    )


# ---- pieces ---------------------------------------------------------------------------------------------


def test_row_groups_cover_every_row_once_from_the_footers(tmp_path):
    expected = table()
    write_parts(tmp_path / "parts", expected)  # parts of 17, 13, 20 rows in groups of 6
    groups = ParquetRowGroups(str(tmp_path / "parts"))
    assert groups.num_rows == 50 and groups.columns == ["rooms", "area", "price"]
    assert [g.num_rows for g in groups.row_groups] == [6, 6, 5, 6, 6, 1, 6, 6, 6, 2]
    assert [(g.index, g.first_row) for g in groups.row_groups[:4]] == [(0, 0), (1, 6), (2, 12), (0, 0)]
    groups = pickle.loads(pickle.dumps(groups))  # a DataLoader worker gets its own copy
    pieces = [groups.read(i, dtype=np.float64) for i in range(len(groups))]
    assert [len(p["price"]) for p in pieces] == [g.num_rows for g in groups.row_groups]
    assert_same({k: np.concatenate([p[k] for p in pieces]) for k in expected}, expected)
    # float32 for training, a subset of the columns
    piece = groups.read(3, columns=["price"])
    assert list(piece) == ["price"] and piece["price"].dtype == np.float32
    np.testing.assert_array_equal(piece["price"], expected["price"][17:23].astype(np.float32))


def test_folder_and_glob_give_the_same_row_groups(tmp_path):
    write_parts(tmp_path / "parts", table())
    by_folder = ParquetRowGroups(str(tmp_path / "parts"), ["area"])
    by_glob = ParquetRowGroups(str(tmp_path / "parts" / "part-*.parquet"), ["area"])
    assert by_folder.row_groups == by_glob.row_groups and by_folder.files == by_glob.files
    assert len(by_folder.files) == 3  # _SUCCESS is not a part


def test_csv_byte_ranges_come_in_file_order(tmp_path):
    expected = table(n=2000)
    write_csv(tmp_path / "t.csv", expected)
    batches = stream_csv(str(tmp_path / "t.csv"), ["price", "area"], chunk_bytes=4096, dtype=np.float64)
    assert len(batches) > 10
    assert_same(
        {k: np.concatenate([b[k] for b in batches]) for k in ("price", "area")},
        {
            "price": expected["price"],
            "area": expected["area"],
        },
    )
    first = stream_csv(str(tmp_path / "t.csv"), ["rooms"])[0]
    assert first["rooms"].dtype == np.float32


# ---- errors ---------------------------------------------------------------------------------------------

CSV_ERRORS = [
    ("", "t.csv: the file is empty; expected a header row of column names and data rows"),
    ("\ufeff\n", "t.csv: the file is empty; expected a header row of column names and data rows"),
    ("\nx,y\n1,2\n", "t.csv: line 1 is blank; the first line must be the header row of column names"),
    ("x,y\n", "t.csv: the file holds no data rows"),
    ("x,y\n1,2\n\n3\n", "t.csv: line 4 has 1 cells, the header has 2"),
    ("x,y\n1,2\n3,4,5\n", "t.csv: line 3 has 3 cells, the header has 2"),
    ("x,y\n1,2\n\n3, abc\n", "t.csv: line 4, column 'y': ' abc' is not a number"),
    ("x,y\n1,2\n3,\n", "t.csv: line 3, column 'y': '' is not a number"),
    ("x,y\n1,NA\nfoo,2\n", "t.csv: line 2, column 'y': 'NA' is not a number"),
    ("x;y\n1,5;2\n", "t.csv: line 2, column 'x': '1,5' is not a number"),
    (
        "x,y\n1,2\n3,nan\n",
        "t.csv: column 'y' has a NaN or infinite value in data row 2; every cell must be a finite number",
    ),
    (
        "x,y\n1,2\n\n-inf,4\n",
        "t.csv: column 'x' has a NaN or infinite value in data row 2; every cell must be a finite number",
    ),
    ("x,y\n1,2\n1e39,4\n", None),  # finite in float64: read_table takes it, float32 batches do not
    (
        "a;b,c\n1;2\n",
        "t.csv: cannot tell the separator: the header line holds ',' (1x), ';' (1x); it must hold only "
        "one of ',' ';' tab, so rename the columns that contain the others",
    ),
    ("x,x\n1,2\n", "t.csv: the header names columns ['x'] more than once"),
    (b"x,\xe9\n1,2\n", "t.csv: the header line is not UTF-8 text"),
    (b"x,y\n1,2\n1,\xe9\n", "t.csv: line 3, column 'y': '\\\\xe9' is not a number"),
]


@pytest.mark.parametrize(("content", "expected"), CSV_ERRORS)
def test_bad_csv_files_are_one_line_errors(content, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_bytes(content if isinstance(content, bytes) else content.encode())
    if expected is None:
        assert read_table("t.csv")["x"][1] == 1e39
        with pytest.raises(ConfigError) as error:
            stream_csv("t.csv")
        assert str(error.value) == "t.csv: column 'x': 1e+39 in data row 2 is too large for float32"
        return
    with pytest.raises(ConfigError) as error:
        read_table("t.csv")
    assert str(error.value) == expected
    # streaming says the same
    with pytest.raises(ConfigError) as error:
        stream_csv("t.csv")
    assert str(error.value) == expected


def test_a_bad_cell_deep_in_a_streamed_file_is_found_on_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [f"{i},{i}.5" for i in range(3000)]
    rows[2500] = "7,seven"  # line 2503: the header, 2500 rows and a blank line come before it
    (tmp_path / "t.csv").write_text("x,y\n" + "\n".join(rows[:1000]) + "\n\n" + "\n".join(rows[1000:]) + "\n")
    expected = "t.csv: line 2503, column 'y': 'seven' is not a number"
    for read in (lambda: read_table("t.csv"), lambda: stream_csv("t.csv", chunk_bytes=2048)):
        with pytest.raises(ConfigError) as error:
            read()
        assert str(error.value) == expected


def test_missing_files_and_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "t.csv", table(n=3))
    write_parts(tmp_path / "parts", table(), bounds=(0, 50))
    (tmp_path / "nothing").mkdir()
    cases = [
        (lambda: read_table("none.csv"), "data file 'none.csv' does not exist"),
        (lambda: read_table("none.parquet"), "data file 'none.parquet' does not exist"),
        (lambda: stream_csv("none.csv"), "data file 'none.csv' does not exist"),
        (lambda: column_names("none.npz"), "data file 'none.npz' does not exist"),
        (lambda: read_table("parts/x-*.parquet"), "no file matches 'parts/x-*.parquet'"),
        (lambda: ParquetRowGroups("nothing"), "folder 'nothing' holds no Parquet files (.parquet, .parq, .pq)"),
        (lambda: read_table("data-*.csv"), "data-*.csv: a glob must name Parquet part files (.parquet, .parq, .pq)"),
        (
            lambda: read_table("t.csv", ["price", "size", "age"]),
            "t.csv: columns ['size', 'age'] not found; the file has columns ['rooms', 'area', 'price']",
        ),
        (
            lambda: stream_csv("t.csv", ["size"]),
            "t.csv: columns ['size'] not found; the file has columns ['rooms', 'area', 'price']",
        ),
        (
            lambda: ParquetRowGroups("parts", ["size"]),
            "parts/part-0.parquet: columns ['size'] not found; the file has columns ['rooms', 'area', 'price']",
        ),
        (
            lambda: ParquetRowGroups("parts", ["area"]).read(0, columns=["price"]),
            "parts: columns ['price'] were not among those checked, ['area']",
        ),
    ]
    assert_errors(cases)


def test_bad_parquet_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"x": [1.0, 2.0], "name": ["a", "b"]}), "text.parquet")
    pq.write_table(pa.table({"x": [1.0, None, 3.0]}), "null.parquet")
    (tmp_path / "broken.parquet").write_text("x,y\n1,2\n")
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), "none.parquet")
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0, np.nan]}), "nan.parquet", row_group_size=4)
    cases = [
        (
            lambda: read_table("text.parquet"),
            "text.parquet: column 'name' has type string; a column must hold integers or floats",
        ),
        (
            lambda: ParquetRowGroups("text.parquet").read(0),
            "text.parquet: row group 0, column 'name' has type string; read as numbers, a column must hold integers "
            "or floats",
        ),
        (lambda: read_table("null.parquet"), "null.parquet: column 'x' has an empty (null) value in data row 2"),
        (lambda: read_table("none.parquet"), "none.parquet: the table holds no data rows"),
        (
            lambda: ParquetRowGroups("nan.parquet").read(1),
            "nan.parquet: row group 1, column 'x' has a NaN or infinite value in data row 6; every cell must be a "
            "finite number",
        ),
        (
            lambda: read_table("nan.parquet"),
            "nan.parquet: column 'x' has a NaN or infinite value in data row 6; every cell must be a finite number",
        ),
    ]
    assert_errors(cases)
    with pytest.raises(ConfigError, match=r"^broken.parquet: not a readable Parquet file \(") as error:
        read_table("broken.parquet")
    assert "\n" not in str(error.value)


def test_bad_numpy_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("flat.npy", np.zeros(3))
    np.savez("square.npz", x=np.zeros((3, 2)))
    np.savez("text.npz", x=np.array(["a", "b"]))
    cases = [
        ("flat.npy", "flat.npy: a .npy table must be 2-D (rows x columns), got shape (3,)"),
        ("square.npz", "square.npz: column 'x' must be a 1-D numeric array, got float64 (3, 2)"),
        ("text.npz", "text.npz: column 'x' must be a 1-D numeric array, got <U1 (2,)"),
    ]
    for path, expected in cases:
        with pytest.raises(ConfigError) as error:
            read_table(path)
        assert str(error.value) == expected


def test_without_pyarrow_csv_and_parquet_ask_for_the_extra_and_numpy_still_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "t.csv", table(n=3))
    write_parts(tmp_path / "parts", table(), bounds=(0, 50))
    np.savez("t.npz", **table(n=3))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else find_spec(name, *a)
    )
    cases = [
        (lambda: read_table("t.csv"), 't.csv: reading .csv tables needs the tables extra: pip install -e ".[tables]"'),
        (
            lambda: stream_csv("t.csv"),
            't.csv: reading .csv tables needs the tables extra: pip install -e ".[tables]"',
        ),
        (
            lambda: read_table("parts/part-0.parquet"),
            'parts/part-0.parquet: reading .parquet tables needs the tables extra: pip install -e ".[tables]"',
        ),
        (
            lambda: ParquetRowGroups("parts"),
            'parts: reading .parquet tables needs the tables extra: pip install -e ".[tables]"',
        ),
    ]
    assert_errors(cases)
    assert list(read_table("t.npz")) == ["rooms", "area", "price"]
