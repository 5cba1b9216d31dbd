"""The regression example through `export`: the file predicts what `predict` wrote, in the table's units and column
order; the export command's errors on the example's checkpoints.

    python -m pytest tests/regression/test_example_export.py
"""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
import torch
from conftest import version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.cli import main
from linreg_pl.export import FORMATS

ONNX_INSTALLED = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not ONNX_INSTALLED, reason='needs the `export` extra: pip install -e ".[export]"')


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-5 relative to the predictions' scale.

    Not element by element: ONNX Runtime's Gemm sums in another order than torch, so a prediction
    near 0 keeps the float32 rounding of the larger terms (measured, 2 inputs, batch 1000: at most
    1.9e-6 apart on predictions up to 28, 7e-8 of the scale, but 6.6e-5 relative to one near 0).
    """
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def written_predictions(path) -> np.ndarray:
    with open(path) as handle:
        return np.array([float(row["prediction"]) for row in csv.DictReader(handle)], dtype=np.float32)


def run_exported(path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(["predictions"], {"features": x})[0]
    with torch.no_grad():
        return torch.export.load(path).module()(torch.from_numpy(x)).numpy()


def check_export_matches_predict(root, data_args: list[str], suffix: str, capsys) -> list[str]:
    """Fit, predict the test split from last.ckpt, export; the file predicts what `predict` wrote."""
    cli = run_cli("fit", *data_args, "--trainer.max_epochs", "2")
    ckpt = str(version_dir(root) / "checkpoints" / "last.ckpt")
    run_cli("predict", *data_args, "--ckpt_path", ckpt, "--predictions.path", "predictions.csv")
    capsys.readouterr()
    main(["export", "--ckpt_path", ckpt, "--output", f"model{suffix}"])
    out = capsys.readouterr().out.splitlines()
    expected = written_predictions(root / "predictions.csv")
    features, _, rows = cli.datamodule.splits["test"]
    x = features[rows.argsort()].numpy()  # predictions.csv is in row order
    path = root / f"model{suffix}"
    assert_close(run_exported(path, x), expected)
    assert_close(run_exported(path, x[:1]), expected[:1])
    assert_close(run_exported(path, np.resize(x, (1000, x.shape[1]))), np.resize(expected, 1000))
    assert out[0] == f"wrote model{suffix} ({FORMATS[suffix]}, {path.stat().st_size:,} bytes)"
    return out


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=needs_onnx), ".pt2"])
def test_cli_export_of_the_default_model_predicts_what_predict_wrote(isolated, capsys, suffix):
    out = check_export_matches_predict(isolated, [], suffix, capsys)
    assert out[1:] == [
        'input "features": float32 [batch, 2]',
        'output "predictions": float32 [batch]',
    ]


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=needs_onnx), ".pt2"])
def test_cli_export_of_a_standardised_table_model_keeps_units_and_column_order(isolated, capsys, suffix):
    generator = np.random.default_rng(0)
    size = generator.normal(1000.0, 100.0, 800)  # far from 0 and 1: standardisation matters; 640 rows train, 64 batches
    rate = generator.normal(0.0, 0.01, 800)
    price = 3.0 * size - 200.0 * rate + 50.0 + generator.normal(0.0, 1.0, 800)
    lines = [f"{a},{b},{c}" for a, b, c in zip(size, rate, price, strict=True)]
    (isolated / "table.csv").write_text("size,rate,price\n" + "\n".join(lines) + "\n")
    table = ["--data", "TableRegressionDataModule", "--data.path", "table.csv", "--data.target", "price"]
    out = check_export_matches_predict(isolated, [*table, "--data.features", "[rate, size]"], suffix, capsys)
    assert out[1] == 'input "features": float32 [batch, 2], columns in this order: rate, size'


def test_cli_export_errors_name_the_checkpoint_and_the_reason(isolated, capsys):
    run_cli("fit", "--trainer.max_epochs", "1")
    ckpt = version_dir(isolated) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["state_dict"]["linear.weight"] = torch.zeros(1, 3)
    torch.save(checkpoint, isolated / "other_shape.ckpt")
    (isolated / "corrupt.ckpt").write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    cases = {
        "missing.ckpt": "checkpoint 'missing.ckpt' does not exist",
        "corrupt.ckpt": "checkpoint 'corrupt.ckpt' cannot be loaded: it is corrupt or truncated, not a checkpoint, "
        "or holds objects other than tensors and plain values, which are loaded only with --weights_only false",
        # torch's reason as torch raised it (two lines)
        "other_shape.ckpt": "checkpoint 'other_shape.ckpt' does not rebuild LinearRegression: RuntimeError: "
        "Error(s) in loading state_dict for LinearRegression:\n\tsize mismatch for linear.weight: copying a param with "
        "shape torch.Size([1, 3]) from checkpoint, the shape in current model is torch.Size([1, 2]).",
    }
    for name, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            main(["export", "--ckpt_path", name, "--output", "model.pt2"])
        out, err = capsys.readouterr()
        assert exit_.value.code == 2 and out == "", name
        assert err.startswith(f"linreg-pl: error: {message}") and err.count("\n") == message.count("\n") + 1, err
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path", str(ckpt), "--output", "model.bin"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: cannot export to model.bin: unknown suffix '.bin'; use .onnx (ONNX), .pt2 (torch.export)\n"
    )
    assert not list(isolated.glob("model.*"))
