"""The exported files predict what the model predicts, at any batch size, and export says nothing."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
from conftest import version_dir
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader

from linreg_pl import export as export_module
from linreg_pl.cli import main
from linreg_pl.errors import ConfigError
from linreg_pl.export import ONNX_OPSET, export_model

# the `export` extra; without it only the torch.export half is tested
ONNX_INSTALLED = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not ONNX_INSTALLED, reason='needs the `export` extra: pip install -e ".[export]"')


class Standardize(nn.Module):
    def __init__(self, mean: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.scale


class StandInRegression(nn.Module):
    """The project's model in miniature: standardise, nn.Linear, squeeze, back to the target's units."""

    def __init__(self, num_inputs: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.standardize = Standardize(
            torch.randn(num_inputs, generator=generator) * 3 + 5, torch.rand(num_inputs, generator=generator) * 4 + 0.5
        )
        self.linear = nn.Linear(num_inputs, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(1, num_inputs, generator=generator))
            self.linear.bias.fill_(0.7)
        self.register_buffer("target_mean", torch.tensor(12.5))
        self.register_buffer("target_scale", torch.tensor(3.25))

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.standardize(features)).squeeze(-1) * self.target_scale + self.target_mean


def features(batch: int, num_inputs: int) -> np.ndarray:
    # around the stand-in's feature means, like real data
    return (np.random.default_rng(batch).normal(5.0, 3.0, size=(batch, num_inputs))).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-5 relative to the predictions' scale.

    Not element by element: ONNX Runtime's Gemm sums in another order than torch, so a prediction
    near 0 keeps the float32 rounding of the larger terms (measured, 2 inputs, batch 1000: at most
    1.9e-6 apart on predictions up to 28, 7e-8 of the scale, but 6.6e-5 relative to one near 0).
    """
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.fixture(scope="module", params=[2, 10], ids=lambda n: f"{n}_inputs")
def exported(request, tmp_path_factory):
    """The stand-in model and its two exports, written once per feature count."""
    num_inputs = request.param
    model = StandInRegression(num_inputs)
    folder = tmp_path_factory.mktemp(f"export_{num_inputs}")
    onnx_path = export_model(model, torch.zeros(2, num_inputs), folder / "model.onnx").path if ONNX_INSTALLED else None
    return model, onnx_path, export_model(model, torch.zeros(2, num_inputs), folder / "model.pt2").path


@needs_onnx
@pytest.mark.parametrize("batch", [1, 1000])
def test_onnx_predicts_what_the_model_predicts(exported, batch):
    import onnxruntime

    model, onnx_path, _ = exported
    x = features(batch, model.linear.in_features)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (predictions,) = session.run(["predictions"], {"features": x})
    assert predictions.dtype == np.float32 and predictions.shape == (batch,)
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert_close(predictions, expected)


@pytest.mark.parametrize("batch", [1, 1000])
def test_pt2_predicts_what_the_model_predicts(exported, batch):
    model, _, pt2_path = exported
    x = torch.from_numpy(features(batch, model.linear.in_features))
    with torch.no_grad():
        predictions = torch.export.load(pt2_path).module()(x)
        expected = model(x)
    assert predictions.dtype == torch.float32 and predictions.shape == (batch,)
    assert_close(predictions.numpy(), expected.numpy())


@needs_onnx
def test_onnx_graph_names_a_free_batch_dimension(exported):
    import onnx

    model, onnx_path, _ = exported
    graph = onnx.load(onnx_path)
    onnx.checker.check_model(graph, full_check=True)
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", ONNX_OPSET)]
    (inputs,), (outputs,) = graph.graph.input, graph.graph.output
    assert inputs.name == "features" and outputs.name == "predictions"
    input_shape = [d.dim_param or d.dim_value for d in inputs.type.tensor_type.shape.dim]
    output_shape = [d.dim_param or d.dim_value for d in outputs.type.tensor_type.shape.dim]
    assert input_shape == ["batch", model.linear.in_features] and output_shape == ["batch"]
    assert not list(onnx_path.parent.glob("*.data"))  # one self-contained file


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=needs_onnx), ".pt2"])
def test_export_prints_no_warning_and_leaves_the_model_alone(tmp_path, capfd, suffix):
    model = StandInRegression(3).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_model(model, torch.zeros(2, 3), tmp_path / "nested" / f"model{suffix}").path
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")
    assert path == tmp_path / "nested" / f"model{suffix}" and path.stat().st_size > 0
    assert model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_unknown_suffix_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        export_model(StandInRegression(2), torch.zeros(2, 2), tmp_path / "model.bin")
    assert str(error.value) == (
        f"cannot export to {tmp_path / 'model.bin'}: unknown suffix '.bin'; use .onnx (ONNX), .pt2 (torch.export)"
    )


def test_onnx_without_the_extra_names_the_install_command(tmp_path, monkeypatch):
    real_find_spec = export_module.importlib.util.find_spec
    monkeypatch.setattr(
        export_module.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real_find_spec(name)
    )
    with pytest.raises(ConfigError) as error:
        export_model(StandInRegression(2), torch.zeros(2, 2), tmp_path / "model.onnx")
    assert str(error.value) == 'ONNX export needs the `export` extra: pip install -e ".[export]"'
    assert not (tmp_path / "model.onnx").exists()


# the `export` subcommand, end to end: fit, predict from the checkpoint, export, run the file


def test_cli_export_help(isolated, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    assert "--ckpt_path" in capsys.readouterr().out


# export with no flags, for a user's model (tests/user_models.py) whose data module saved no hyperparameters: the
# example input comes from the run's config.yaml. Both failed on the code before: the first with "cannot tell what
# StoreRegressor.forward takes: give --input_shape ...", the second with a `KeyError: 'points'` traceback


class PointData(LightningDataModule):
    """Dict batches whose keys are not the model's forward parameters: `{"xy": [n, 2], "label": [n]}`."""

    def __init__(self, num_examples: int = 40) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        xy = torch.randn(num_examples, 2, generator=generator)
        self.rows = [{"xy": point, "label": int(point.sum() > 0)} for point in xy]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.rows, batch_size=10)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.rows, batch_size=10)


class PointModel(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()  # the checkpoint names the class (LightningCLI's `_class_path`)
        self.linear = nn.Linear(2, 2)

    def forward(self, points: Tensor) -> Tensor:
        return self.linear(points)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["xy"]), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false", "--trainer.max_epochs", "1"]


def test_export_with_no_flags_builds_the_data_module_from_the_runs_config_yaml(isolated, capsys):
    user = ["--model", "user_models.StoreRegressor", "--data", "user_models.Sales"]
    cli = main(["fit", *user, *QUIET])
    run = version_dir(isolated)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        'input "features": float32 [batch, 3]',
        'input "store": int64 [batch]',
        'output "predictions": float32 [batch]',
    ]
    features, store, _ = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        exported = torch.export.load("model.pt2").module()(features, store)
        torch.testing.assert_close(exported, cli.model.eval()(features, store))

    # a data module its config.yaml cannot build again: its own words, one line
    saved = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(saved.replace("num_examples: 400", "num_examples: -1"))
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"linreg-pl: error: cannot build the data module of {run / 'config.yaml'}: RuntimeError: Trying to create "
        "tensor with negative dimension -1: [-1, 3]\n"
    )
    # an argument the class does not take: jsonargparse's reason, in its own words
    (run / "config.yaml").write_text(saved.replace("num_examples: 400", "num_exampels: 400"))
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"linreg-pl: error: cannot build the data module of {run / 'config.yaml'}: TypeError: ")
    assert "Option 'num_exampels' is not accepted" in err and "Traceback" not in err
    # no config.yaml: what export needs instead
    (run / "config.yaml").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: cannot tell what StoreRegressor.forward takes: give --input_shape (one example's shape), "
        "set the module's example_input_array, or keep the run's config.yaml beside its checkpoints/ folder so that "
        "export can build the data module\n"
    )


def test_a_dict_batch_is_matched_to_forward_by_name_and_a_mismatch_is_one_line_naming_both(isolated, capsys):
    main(["fit", "--model", f"{__name__}.PointModel", "--data", f"{__name__}.PointData", *QUIET])
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    assert exit_.value.code == 2
    assert capsys.readouterr() == (
        "",
        "linreg-pl: error: cannot export PointModel: forward takes (points), the first validation batch of PointData "
        "is a dict of (xy, label); name its keys after forward's parameters, or set the module's "
        "example_input_array\n",
    )
    # keys named after forward's parameters: matched by name, whatever else the batch holds
    PointData.val_dataloader = lambda self: DataLoader([{"label": r["label"], "points": r["xy"]} for r in self.rows])
    try:
        main(["export", "--ckpt_path", ckpt, "--output", "model.pt2"])
    finally:
        del PointData.val_dataloader
    assert capsys.readouterr().out.splitlines()[1:] == [
        'input "points": float32 [batch, 2]',
        'output "predictions": float32 [batch, 2]',
    ]


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=needs_onnx), ".pt2"])
def test_a_tuple_example_input_array_gives_one_named_input_per_forward_parameter(tmp_path, suffix):
    from user_models import StoreRegressor

    model = StoreRegressor().eval()
    model.example_input_array = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))  # forward(features, store)
    example = export_module._example_input(model, str(tmp_path / "unused.ckpt"), None)
    exported = export_model(model, example, tmp_path / f"model{suffix}")
    assert exported.inputs == {"features": (torch.float32, (3,)), "store": (torch.int64, ())}
    assert exported.outputs == {"predictions": (torch.float32, ())}
    features, store = torch.randn(5, 3), torch.tensor([0, 3, 1, 2, 3])
    with torch.no_grad():
        expected = model(features, store)
    if suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
        (actual,) = session.run(None, {"features": features.numpy(), "store": store.numpy()})
        actual = torch.from_numpy(actual)
    else:
        with torch.no_grad():
            actual = torch.export.load(exported.path).module()(features, store)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=needs_onnx), ".pt2"])
def test_a_two_input_export_prints_no_warning(tmp_path, capfd, suffix):
    # the ONNX exporter notes, on every export of several inputs, that they share the batch axis: nothing to act on
    from user_models import StoreRegressor

    example = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(StoreRegressor(), example, tmp_path / f"model{suffix}")
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")


def test_an_example_that_does_not_fit_a_one_input_forward_asks_for_input_shape(tmp_path):
    with pytest.raises(ConfigError) as error:
        export_model(nn.Linear(3, 1), (torch.zeros(2, 3), torch.zeros(2, 3)), tmp_path / "model.pt2")
    assert str(error.value) == (
        "cannot export Linear: forward takes 1 inputs (input), the example is (Tensor, Tensor); give --input_shape"
    )


@pytest.mark.parametrize(
    "example, got",
    [((torch.zeros(2, 3),), "Tensor"), ((torch.zeros(2, 3), [0, 1]), "Tensor, list"), ((1.0, 2.0), "float, float")],
)
def test_an_example_input_that_does_not_fit_forward_is_one_line_naming_what_it_takes(tmp_path, example, got):
    from user_models import StoreRegressor

    with pytest.raises(ConfigError) as error:
        export_model(StoreRegressor(), example, tmp_path / "model.pt2")
    assert str(error.value) == (
        f"cannot export StoreRegressor: forward takes 2 inputs (features, store), the example is ({got}); set "
        "example_input_array to 2 tensors (a tuple, or a dict by name)"
    )
    assert not (tmp_path / "model.pt2").exists()


class DataDependentBranch(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 2 if bool(x.sum() > 0) else x  # a branch on the data's values: torch.export cannot trace it


def test_a_module_torch_export_cannot_trace_is_a_config_error_with_torchs_reason_as_raised(tmp_path, capfd):
    with pytest.raises(ConfigError) as error:
        export_model(DataDependentBranch(), torch.ones(2, 3), tmp_path / "model.pt2")
    # torch's message whole, as torch raised it (16 lines of advice in torch 2.13)
    assert str(error.value).startswith(
        "torch.export cannot export DataDependentBranch: GuardOnDataDependentSymNode: Could not guard on "
        "data-dependent expression"
    )
    assert capfd.readouterr().err == ""  # torch's partial graph is not printed beside it
    assert not (tmp_path / "model.pt2").exists()
