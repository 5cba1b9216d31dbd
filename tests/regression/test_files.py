"""File data: a table in, predictions out, and the closed-form least-squares yardstick."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    exact_least_squares,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
    with_experiment,
)

from linreg_pl.cli import main
from linreg_pl.errors import ConfigError
from linreg_pl.regression.closed_form import least_squares
from linreg_pl.regression.data import TableRegressionDataModule


def write_table(path, columns: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*(v.tolist() for v in columns.values()), strict=True))


def linear_table(n: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """price = 3·rooms - 0.01·area + 7 + noise, with area ~1000 and rooms ~1: scales 1000x apart."""
    rng = np.random.default_rng(seed)
    rooms, area = rng.normal(0, 1, n), rng.normal(1000, 300, n)
    return {"rooms": rooms, "area": area, "price": 3 * rooms - 0.01 * area + 7 + rng.normal(0, 0.1, n)}


def csv_args(path, *extra: str) -> list[str]:
    return ["--data", "TableRegressionDataModule", "--data.path", str(path), "--data.target", "price", *extra]


def test_a_csv_with_a_known_relation_is_recovered_and_reported(isolated, capsys):
    write_table(isolated / "houses.csv", linear_table())
    cli = run_cli("fit", *csv_args(isolated / "houses.csv"))
    weight, bias = cli.model.learned_parameters()
    exact_w, exact_b = exact_least_squares(*cli.datamodule.splits["train"][:2])
    # relative to each coefficient: -0.01 per unit of area must come out negative and of its size
    torch.testing.assert_close(weight.double(), exact_w, rtol=1e-2, atol=0)
    torch.testing.assert_close(float(bias), float(exact_b), rtol=1e-2, atol=0)
    out = capsys.readouterr().out
    assert "least squares" in out and "max |learned - least squares|" in out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_of_very_different_scales_reach_the_closed_form_test_mse(seed, isolated):
    """Standardising with training-split statistics lets the default SGD (lr 0.03) train on raw units ~1 and
    ~1000. Batches of 50: at batch 10 the last iterate of constant-lr SGD jitters by up to ~2% of the
    noise floor (README), whatever the scales."""
    write_table(isolated / "houses.csv", linear_table(n=5000, seed=seed))
    cli = run_cli("fit", *csv_args(isolated / "houses.csv", "--data.batch_size", "50"))
    scores = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ParameterReport").result["scores"]
    learned_mse, closed_mse = scores["learned test"][0], scores["closed-form test"][0]
    assert learned_mse <= closed_mse * 1.01
    # the statistics come from the training split only
    train_features = cli.datamodule.splits["train"][0]
    assert torch.allclose(cli.model.standardize.mean, train_features.mean(0))
    assert not torch.allclose(cli.model.standardize.mean, cli.datamodule.load_tensors()[0].mean(0).float())


def test_without_standardising_the_same_table_diverges(isolated, capsys):
    write_table(isolated / "houses.csv", linear_table(n=5000))
    with pytest.raises(SystemExit) as exit_info:
        main(
            with_experiment(
                ["fit", *csv_args(isolated / "houses.csv", "--data.batch_size", "50", "--data.standardize", "false")]
            )
        )
    assert exit_info.value.code == 1
    assert "training diverged" in capsys.readouterr().err


def test_closed_form_is_the_least_squares_answer():
    features = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    targets = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 3.0
    weight, bias = least_squares(features, targets)
    assert torch.allclose(weight, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) and bias.item() == pytest.approx(
        3.0
    )


def test_predict_on_a_new_file_of_raw_features_writes_original_units_in_input_order(isolated):
    table = linear_table()
    write_table(isolated / "houses.csv", table)
    run_cli("fit", *csv_args(isolated / "houses.csv"))
    new = linear_table(n=37, seed=1)
    # another column order and no target: columns are found by name
    write_table(isolated / "new.csv", {"area": new["area"], "rooms": new["rooms"]})
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    run_cli(
        "predict",
        *csv_args(isolated / "houses.csv", "--data.predict_path", str(isolated / "new.csv")),
        "--ckpt_path",
        ckpt,
        "--predictions.path",
        "predictions.csv",
    )
    rows = list(csv.DictReader((isolated / "predictions.csv").open()))
    assert [int(r["row"]) for r in rows] == list(range(37))
    predicted = np.array([float(r["prediction"]) for r in rows])
    assert np.abs(predicted - (3 * new["rooms"] - 0.01 * new["area"] + 7)).max() < 0.1


def test_npz_and_npy_tables(isolated):
    table = linear_table(n=300)
    np.savez(isolated / "houses.npz", **table)
    module = TableRegressionDataModule(str(isolated / "houses.npz"), target="price", features=["area", "rooms"])
    assert module.num_inputs == 2
    assert torch.equal(module.load_tensors()[0][:, 0], torch.tensor(table["area"], dtype=torch.float64))
    np.save(isolated / "houses.npy", np.stack([table["rooms"], table["area"], table["price"]], axis=1))
    module = TableRegressionDataModule(str(isolated / "houses.npy"), target="2")
    assert module.feature_names == ["0", "1"]
    assert torch.equal(module.load_tensors()[1], torch.tensor(table["price"], dtype=torch.float64))


@pytest.mark.parametrize(
    ("content", "target", "expected"),
    [
        ("a,b\n1,2\n", "price", "no target column 'price'; columns are ['a', 'b']"),
        ("a,price\n1,2\n3,x\n" + "1,2\n" * 40, "price", "column 'price': 'x' in data row 2 is not a number"),
        ("a,price\n1,2\ninf,3\n" + "1,2\n" * 40, "price", "column 'a' has an infinite value in data row 2"),
        ("a,price\n1,inf\n2,3\n" + "1,2\n" * 40, "price", "column 'price' has an infinite value in data row 1"),
        ("", "price", "the file is empty; expected a header row"),
        ("a,price\n", "price", "the file holds no data rows"),
        ("a,price\n1,2,3\n", "price", "line 2 has 3 cells, the header has 2"),
    ],
)
def test_bad_tables_are_one_line_errors(content, target, expected, isolated, capsys):
    (isolated / "bad.csv").write_text(content)
    with pytest.raises(ConfigError, match=None) as error:
        _ = TableRegressionDataModule(str(isolated / "bad.csv"), target=target).num_inputs  # read when first needed
    assert expected in str(error.value)
    with pytest.raises(SystemExit) as exit_info:  # and through the CLI: one line, status 2
        main(
            with_experiment(
                ["fit", "--data", "TableRegressionDataModule", "--data.path", "bad.csv", "--data.target", target]
            )
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expected in err[-1] and "Traceback" not in "\n".join(err)


def test_missing_feature_column_and_missing_file(isolated):
    write_table(isolated / "houses.csv", linear_table(n=50))
    with pytest.raises(ConfigError, match=r"columns \['size'\] not found; the file has columns"):
        _ = TableRegressionDataModule(str(isolated / "houses.csv"), target="price", features=["rooms", "size"]).encoding
    with pytest.raises(ConfigError, match="data file 'nowhere.csv' does not exist"):
        _ = TableRegressionDataModule("nowhere.csv", target="price").encoding


@pytest.mark.picture  # TensorBoard takes the figure itself
def test_tensorboard_config_writes_event_files(isolated):
    pytest.importorskip("tensorboard")
    run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        "--config",
        str(ROOT / "configs" / "tensorboard.yaml"),
        "--trainer.max_epochs",
        "1",
    )
    assert list(version_dir(isolated).glob("events.out.tfevents.*"))


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_a_byte_order_mark_and_any_of_three_separators_train_the_same(separator, isolated):
    table = linear_table(n=400)
    header = separator.join(table)
    rows = [separator.join(repr(float(v)) for v in values) for values in zip(*table.values(), strict=True)]
    (isolated / "t.csv").write_text("\ufeff" + header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    module = TableRegressionDataModule(str(isolated / "t.csv"), target="price")
    assert module.feature_names == [name for name in table if name != "price"]
    assert torch.equal(module.load_tensors()[1], torch.tensor(table["price"], dtype=torch.float64))


def test_the_target_among_the_features_is_refused(isolated):
    write_table(isolated / "houses.csv", linear_table(n=50))
    with pytest.raises(ConfigError, match=r"the target 'price' is also listed in features; list only the inputs"):
        _ = TableRegressionDataModule(str(isolated / "houses.csv"), target="price", features=["area", "price"]).encoding


def test_standardisation_statistics_are_float64(isolated):
    # 10,000 + a spread of 1e-3: float32 keeps about 0.001 of it (its spacing at 1e4), float64 all of it
    generator = np.random.default_rng(0)
    offset = 1e4 + generator.normal(0, 1e-3, 200)
    table = {"x": offset, "y": generator.normal(0, 1, 200)}
    np.savez(isolated / "t.npz", **table)
    module = TableRegressionDataModule(str(isolated / "t.npz"), target="y")
    train_rows = module._load_splits()["train"][2].numpy()
    statistics = module.standardization
    assert statistics["feature_mean"][0] == pytest.approx(offset[train_rows].mean(), rel=1e-12)
    assert statistics["feature_scale"][0] == pytest.approx(offset[train_rows].std(), rel=1e-9)
