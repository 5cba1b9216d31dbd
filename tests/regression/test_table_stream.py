"""Tables streamed from disk chunk by chunk: the same statistics, parameters and predictions as in memory,
each training row once per epoch, disjoint DDP shares of equal step counts, one-line errors."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    exact_least_squares,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.errors import ConfigError
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.streaming import StreamingLoader, TableChunks, TableStreamDataModule

STREAM = ["--config", str(ROOT / "configs" / "table-stream.yaml")]
IN_MEMORY = ["--config", str(ROOT / "configs" / "csv.yaml")]
FEATURES = ["a", "b", "c"]
NUMBERS = dict.fromkeys(FEATURES)  # the encoding of an all-number table


def linear_table(n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """y = 2a - 3b + 0.01c + 5 + noise, c ~1000 in scale."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(0, 1, n), rng.normal(3, 2, n), rng.normal(1000, 300, n)
    return {"a": a, "b": b, "c": c, "y": 2 * a - 3 * b + 0.01 * c + 5 + rng.normal(0, 0.1, n)}


def write_parquet_folder(folder, table: dict[str, np.ndarray]) -> str:
    """Two part files in row groups of 90 rows: 23 chunks of unequal sizes (the files' last groups are short)."""
    folder.mkdir()
    half = len(table["y"]) // 2 + 7
    for name, rows in (("part-0.parquet", slice(0, half)), ("part-1.parquet", slice(half, None))):
        pq.write_table(pa.table({k: v[rows] for k, v in table.items()}), folder / name, row_group_size=90)
    return str(folder)


def write_csv(path, table: dict[str, np.ndarray]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table)
        writer.writerows(zip(*(v.tolist() for v in table.values()), strict=True))
    return str(path)


@pytest.fixture
def tables(isolated):
    table = linear_table()
    return table, {
        "parquet": write_parquet_folder(isolated / "parts", table),
        "csv": write_csv(isolated / "table.csv", table),
    }


def streamed(path: str, **kwargs) -> TableStreamDataModule:
    settings = dict(target="y", batch_size=16, val_fraction=0.1, test_fraction=0.1, chunk_bytes=4000, num_workers=0)
    return TableStreamDataModule(path, **{**settings, **kwargs})


def train_rows(module: TableStreamDataModule) -> list[int]:
    firsts = np.cumsum([0, *module.table.row_counts])
    return [row for c in module.chunk_splits["train"] for row in range(firsts[c], firsts[c + 1])]


def rows_of(loader) -> list[int]:
    return [row for batch in loader for row in batch[-1].tolist()]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_statistics_of_the_one_pass_equal_the_in_memory_ones(kind, tables):
    table, paths = tables
    module = streamed(paths[kind])
    assert len(module.table) > 15 and len(set(module.table.row_counts)) > 1  # several chunks of unequal sizes
    rows = train_rows(module)
    expected = NormalEquations()
    expected.update(torch.tensor(np.stack([table[c][rows] for c in FEATURES], 1)), torch.tensor(table["y"][rows]))
    got, want = module.standardization, expected.standardization()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12)
    for g, w in zip(module.normal_equations.solve(), expected.solve(), strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_training_row_once_per_epoch_in_a_fresh_order(kind, num_workers, tables):
    table, paths = tables
    module = streamed(paths[kind])
    chunks = TableChunks(
        module.table, NUMBERS, "y", module.chunk_splits["train"], 16, shuffle=True, seed=3, row_numbers=True
    )
    loader = StreamingLoader(chunks, num_workers=num_workers)
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen = [row for *_, rows in batches for row in rows.tolist()]
        assert sorted(seen) == train_rows(module)
        for features, targets, rows in batches:  # each row's values are its own
            np.testing.assert_allclose(features[:, 0].numpy(), table["a"][rows.numpy()].astype(np.float32))
            np.testing.assert_allclose(targets.numpy(), table["y"][rows.numpy()].astype(np.float32))
        epochs.append(seen)
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shares_are_disjoint_with_equal_step_counts(world, tables):
    module = streamed(tables[1]["parquet"])

    def share(rank: int, pad: bool, split: str = "train") -> tuple[int, list[int]]:
        # training shares shuffled (epoch 4), evaluation shares in order
        chunks = TableChunks(
            module.table, NUMBERS, "y", module.chunk_splits[split], 16, shuffle=split == "train", seed=1,
            rank=rank, num_replicas=world, pad=pad, row_numbers=True,
        )  # fmt: skip
        chunks.set_epoch(4)
        loader = StreamingLoader(chunks, num_workers=1)
        batches = list(loader)
        assert len(batches) == len(loader)
        return len(batches), rows_of(batches)

    padded = [share(rank, pad=True) for rank in range(world)]
    assert len({steps for steps, _ in padded}) == 1  # every process takes as many steps
    own = [set(share(rank, pad=False)[1]) for rank in range(world)]
    assert sum(map(len, own)) == len(set().union(*own)) == len(train_rows(module))  # disjoint, covering
    for (_, rows), mine in zip(padded, own, strict=True):
        assert set(rows) == mine  # the padding repeats the process's own rows
    evaluated = [share(rank, pad=False, split="val")[1] for rank in range(world)]  # no padding, no repeats
    assert sorted(sum(evaluated, [])) == sorted(set(sum(evaluated, [])))
    assert len(sum(evaluated, [])) == sum(module.table.row_counts[c] for c in module.chunk_splits["val"])


def test_streamed_and_in_memory_fits_reach_the_closed_form(tables, capsys):
    """Same table, same model, lr and schedule (configs/default.yaml's: constant lr 0.03, 3 epochs), batch 16;
    the row order differs. Both land near the exact least-squares weights of their own training rows."""
    table, paths = tables
    common = ["--data.path", paths["parquet"], "--data.target", "y", "--data.batch_size", "16"]
    columns = torch.tensor(np.stack([table[c] for c in FEATURES], 1)), torch.tensor(table["y"])
    for config in (STREAM, ["--data", "TableRegressionDataModule"]):
        cli = run_cli("fit", *config, *common)
        assert cli.trainer.max_epochs == 3 and cli.trainer.global_step == 3 * len(cli.datamodule.train_dataloader())
        rows = train_rows(cli.datamodule) if config is STREAM else cli.datamodule.splits["train"][2]
        exact_w, exact_b = exact_least_squares(columns[0][rows], columns[1][rows])
        weight, bias = cli.model.learned_parameters()
        # each weight within 1% of its own size (measured 0.26%), the 0.01 one included
        torch.testing.assert_close(weight.double(), exact_w, rtol=1e-2, atol=0)
        torch.testing.assert_close(float(bias), float(exact_b), rtol=1e-2, atol=0)
        assert "max |learned - least squares|" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_streamed_predict_writes_the_in_memory_predictions_in_input_order(kind, tables, isolated):
    _, paths = tables
    run_cli("fit", *IN_MEMORY, "--data.path", paths["parquet"], "--data.target", "y", "--trainer.max_epochs", "1")
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    new = linear_table(n=700, seed=5)
    new_path = write_csv(isolated / "new.csv", new) if kind == "csv" else write_parquet_folder(isolated / "new", new)
    outputs = {}
    for name, config in (("stream", STREAM), ("memory", IN_MEMORY)):
        run_cli(
            "predict", *config, "--data.path", paths["parquet"], "--data.target", "y", "--data.predict_path", new_path,
            "--ckpt_path", ckpt, "--predictions.path", f"{name}.csv",
        )  # fmt: skip
        outputs[name] = list(csv.DictReader((isolated / f"{name}.csv").open()))
    assert [int(r["row"]) for r in outputs["stream"]] == list(range(700))
    assert outputs["stream"] == outputs["memory"]  # the same text, line by line
    assert not list(isolated.glob("*.part-*"))


def test_predict_on_the_test_split_gives_its_rows_in_order(tables, isolated):
    _, paths = tables
    args = ["--data.path", paths["csv"], "--data.target", "y", "--data.init_args.chunk_bytes", "4000"]
    run_cli("fit", *STREAM, *args, "--trainer.max_epochs", "1")
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    run_cli("predict", *STREAM, *args, "--ckpt_path", ckpt, "--predictions.path", "p.csv")
    module = streamed(paths["csv"], seed=0)
    firsts = np.cumsum([0, *module.table.row_counts])
    test_rows = [r for c in module.chunk_splits["test"] for r in range(firsts[c], firsts[c + 1])]
    assert [int(r["row"]) for r in csv.DictReader(open("p.csv"))] == test_rows


def test_bad_tables_are_one_line_errors(isolated):
    table = linear_table(n=300)
    with pytest.raises(ConfigError, match="val_fraction 0.1 of 4 chunks is none; write smaller row groups"):
        pq.write_table(pa.table(table), isolated / "few.parquet", row_group_size=80)
        streamed(str(isolated / "few.parquet")).chunk_splits  # noqa: B018 (the table is opened when first needed)
    with pytest.raises(ConfigError, match="no target column 'price'"):
        streamed(str(isolated / "few.parquet"), target="price").encoding  # noqa: B018
    with pytest.raises(ConfigError, match="only Parquet and CSV tables stream"):
        np.savez(isolated / "t.npz", **table)
        streamed(str(isolated / "t.npz")).encoding  # noqa: B018
    lines = write_csv(isolated / "bad.csv", table) and (isolated / "bad.csv").read_text().splitlines()
    lines[250] = lines[250].replace(lines[250].split(",")[1], "oops", 1)
    (isolated / "bad.csv").write_text("\n".join(lines) + "\n")
    module = streamed(str(isolated / "bad.csv"), val_fraction=0, test_fraction=0)
    with pytest.raises(ConfigError, match=r"bad.csv: line 251, column 'b': 'oops' is not a number"):
        module.standardization  # noqa: B018 (the pass reads every training chunk)
    with_null = pa.table({**table, "b": pa.array([*table["b"][:200], None, *table["b"][201:]])})
    pq.write_table(with_null, isolated / "null.parquet", row_group_size=30)
    named = write_csv(isolated / "named.csv", {**table, "name": np.array([f"person-{i}" for i in range(300)])})
    with pytest.raises(ConfigError, match=r"named.csv \(training split\): column 'name' holds \d+ different texts"):
        streamed(named).encoding  # noqa: B018 (a CSV's text column: the levels pass)
    assert streamed(named, features=["a", "b"]).feature_names == ["a", "b"]
    module = streamed(str(isolated / "null.parquet"), val_fraction=0, test_fraction=0, missing="error")
    with pytest.raises(
        ConfigError, match=r"null.parquet: row group 6, column 'b' has an empty \(null\) value in data row 201"
    ):
        module.standardization  # noqa: B018


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_more_processes_than_a_splits_chunks_is_one_line_and_an_empty_split_is_left_to_lightning(split, tables):
    # a process with no chunk of a split made Lightning stop the run ("within local rank has zero length")
    module = streamed(tables[1]["parquet"])
    chunks = module.chunk_splits[split]
    module.trainer = SimpleNamespace(global_rank=0, world_size=40, precision="32-true")
    with pytest.raises(ConfigError) as error:
        module._split_chunks(split)
    assert str(error.value) == (
        f"the {'training' if split == 'train' else split} split: {len(chunks)} chunks cannot be shared among 40 "
        "processes; write smaller row groups (Parquet) or lower chunk_bytes (CSV) to get at least one chunk each"
    )
    empty = streamed(tables[1]["parquet"], val_fraction=0.0)  # no val split at all: Lightning skips validation
    empty.trainer = SimpleNamespace(global_rank=0, world_size=2, precision="32-true")
    assert empty._split_chunks("val").chunks == []


def test_streamed_text_and_missing_values_as_in_memory_and_predict_from_the_checkpoint_alone(isolated, capsys):
    """Text columns dummy-coded with the training chunks' levels, rows with a missing value left out of training
    (one line), float64 chunks under 64-true; predict reads the new table only, and blanks what it cannot use."""
    rng = np.random.default_rng(0)
    n = 600
    x, color, ok = rng.normal(size=n), rng.choice(["red", "green", "blue"], n), rng.choice([True, False], n)
    y = 2 * x + 1.5 * (color == "red") - 0.5 * (color == "green") + 3 * ok + 1 + 0.05 * rng.normal(size=n)
    x_cells, color_cells = [*x], [*color]
    x_cells[3], color_cells[70] = None, None  # at least one in a training chunk, as asserted below
    written = pa.table({"x": x_cells, "color": pa.array(color_cells).dictionary_encode(), "ok": ok, "y": y})
    pq.write_table(written, isolated / "t.parquet", row_group_size=60)  # 10 chunks: 8 train, 1 val, 1 test
    args = ["--data.path", "t.parquet", "--data.target", "y", "--data.batch_size", "32", "--trainer.max_epochs", "1"]
    cli = run_cli("fit", *STREAM, *args, "--trainer.precision", "64-true")
    module = cli.datamodule
    assert module.encoding == {"x": None, "color": ["blue", "green", "red"], "ok": ["false", "true"]}
    assert cli.model.hparams.feature_names == ["x", "color=green", "color=red", "ok=true"]
    assert next(iter(module.train_dataloader()))[0].dtype == torch.float64  # no float32 rounding on the way
    rows = [r for r in train_rows(module) if r not in (3, 70)]
    assert len(rows) < len(train_rows(module))  # a missing value fell in training
    left_out = len(train_rows(module)) - len(rows)
    assert (
        f"left out {left_out} of {len(train_rows(module))} training rows with a missing value"
        in capsys.readouterr().out
    )
    design = np.stack([x, color == "green", color == "red", ok], 1).astype(float)[rows]
    solution = np.linalg.lstsq(np.c_[design, np.ones(len(rows))], y[rows], rcond=None)[0]
    weight, bias = module.normal_equations.solve()
    np.testing.assert_allclose([*weight.tolist(), float(bias)], solution, rtol=1e-9, atol=1e-9)
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    new = pa.table({"ok": [True, False, False], "color": ["red", "blue", "pink"], "x": [1.0, None, 0.0]})
    pq.write_table(new, isolated / "new.parquet")
    (isolated / "t.parquet").rename(isolated / "gone.parquet")  # predict must not open the training table
    outputs = {}
    for name, config in (("stream", STREAM), ("memory", IN_MEMORY)):
        capsys.readouterr()
        predict = ["--data.predict_path", "new.parquet", "--predictions.path", f"{name}.csv", "--ckpt_path", ckpt]
        run_cli("predict", *config, *args[:4], *predict)
        line = "new.parquet: 2 rows get no prediction: a missing value (x: 1); a level not seen in training (color: 1)"
        assert line in capsys.readouterr().out
        outputs[name] = (isolated / f"{name}.csv").read_text().splitlines()
    assert outputs["stream"] == outputs["memory"] and outputs["stream"][2:] == ["1,", "2,"]


def test_a_streamed_fit_writes_the_in_memory_inference_of_its_training_rows(tables, isolated):
    from linreg_pl.regression.inference import ordinary_least_squares

    table, paths = tables
    cli = run_cli("fit", *STREAM, "--data.path", paths["parquet"], "--data.target", "y", "--trainer.max_epochs", "1")
    rows = train_rows(cli.datamodule)
    features, targets = torch.tensor(np.stack([table[c][rows] for c in FEATURES], 1)), torch.tensor(table["y"][rows])
    statistics = NormalEquations()
    statistics.update(features, targets)
    expected = ordinary_least_squares(statistics, (features, targets))  # in memory, both passes
    with open(version_dir(isolated) / "parameters.csv") as handle:
        written = list(csv.DictReader(handle))
    for column in ("optimum", "std_error", "std_error_hc3", "t_value", "p_value", "ci_low", "ci_high"):
        values = expected.estimate if column == "optimum" else getattr(expected, column)
        np.testing.assert_allclose([float(r[column]) for r in written], values.numpy(), rtol=1e-9)
