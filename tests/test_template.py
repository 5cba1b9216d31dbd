"""The template kit: the core (CLI, checkpoints, predictions file, export, DDP) against whatever model and data
module an experiment's config names. Keep this file when you start your own project and add your config to
EXPERIMENTS: every test then runs your model through every subcommand.

Here it runs the regression example (configs/default.yaml) and two models that are not regression, written as a
user would in tests/user_models.py: a classifier with integer targets and a two-output regressor.
"""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import user_models
from conftest import DEFAULT_CONFIG, QUIET, ROOT, run_python, version_dir
from lightning.pytorch.loggers import Logger

from linreg_pl.callbacks import prediction_columns
from linreg_pl.cli import main
from linreg_pl.errors import ConfigError

# config -> the predictions file's header, which names every output of the model's predict_step
EXPERIMENTS = {
    DEFAULT_CONFIG: ["row", "prediction"],
    str(ROOT / "tests" / "configs" / "classifier.yaml"): ["row", "prediction_0", "prediction_1", "prediction_2"],
    str(ROOT / "tests" / "configs" / "two_outputs.yaml"): ["row", "sum", "difference"],
}
experiments = pytest.mark.parametrize("config", list(EXPERIMENTS), ids=lambda c: Path(c).stem)


def run(subcommand: str, config: str, *args: str):
    return main([subcommand, "--config", config, *args, *QUIET])


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def last_checkpoint(root: Path, version: int = 0) -> str:
    return str(version_dir(root, version) / "checkpoints" / "last.ckpt")


@experiments
def test_a_fast_dev_run_fits_one_batch(config, isolated):
    cli = run("fit", config, "--trainer.fast_dev_run", "true")
    assert cli.trainer.global_step == 1
    assert not list(isolated.rglob("*.ckpt"))  # fast_dev_run writes no checkpoint


@experiments
def test_resuming_from_last_ckpt_gives_the_same_bits_as_a_run_never_stopped(config, isolated):
    straight = parameters(run("fit", config, "--trainer.max_epochs", "2").model)
    run("fit", config, "--trainer.max_epochs", "1")
    resumed = run("fit", config, "--trainer.max_epochs", "2", "--ckpt_path", last_checkpoint(isolated, 1))
    assert resumed.trainer.current_epoch == 2
    after = parameters(resumed.model)
    assert after.keys() == straight.keys()
    assert all(torch.equal(after[name], straight[name]) for name in straight)


@experiments
def test_validate_test_and_predict_from_the_checkpoint_match_the_live_model(config, isolated):
    fitted = run("fit", config, "--trainer.max_epochs", "1")
    live = fitted.trainer.validate(fitted.model, datamodule=fitted.datamodule, verbose=False)[0]
    validated = run("validate", config, "--ckpt_path", last_checkpoint(isolated)).trainer.callback_metrics
    assert {name: float(validated[name]) for name in live} == pytest.approx(live, rel=1e-6)
    tested = run("test", config, "--ckpt_path", last_checkpoint(isolated)).trainer.callback_metrics
    assert any(name.startswith("test") for name in tested)

    predicted = run("predict", config, "--ckpt_path", last_checkpoint(isolated), "--predictions.path", "out.csv")
    with open("out.csv", newline="") as handle:
        header, *lines = list(csv.reader(handle))
    assert header == EXPERIMENTS[config]
    # independently: the live model's predict_step on every predict batch, rows numbered in the loader's order
    model, datamodule = fitted.model.eval(), predicted.datamodule
    expected = []
    with torch.no_grad():
        for batch_idx, batch in enumerate(datamodule.predict_dataloader()):
            names, columns = prediction_columns(model.predict_step(batch, batch_idx))
            expected += [list(values) for values in zip(*(c.tolist() for c in columns), strict=True)]
    assert len(lines) == len(expected) > 0
    assert [int(line[0]) for line in lines] == sorted(int(line[0]) for line in lines)
    written = np.array([[float(v) for v in line[1:]] for line in lines])
    order = np.argsort([int(line[0]) for line in lines])
    np.testing.assert_allclose(written[order], np.array(expected, dtype=float), rtol=1e-6, atol=1e-7)


@experiments
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_export_writes_a_file_that_computes_what_forward_computes(config, suffix, isolated, capsys):
    fitted = run("fit", config, "--trainer.max_epochs", "1")
    capsys.readouterr()
    main(["export", "--ckpt_path", last_checkpoint(isolated), "--output", f"model{suffix}"])
    out = capsys.readouterr().out
    assert out.startswith(f"wrote model{suffix}")
    model = fitted.model.eval()
    batch = next(iter(fitted.datamodule.val_dataloader()))
    inputs = batch[0][:7]  # any batch size: the batch dimension is free
    with torch.no_grad():
        expected = model(inputs)
    if suffix == ".pt2":
        with torch.no_grad():
            actual = torch.export.load(f"model{suffix}").module()(inputs)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(f"model{suffix}", providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in session.get_inputs()]
        actual = torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert f'output "predictions": float32 [{", ".join(["batch", *map(str, expected.shape[1:])])}]' in out


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """Every experiment fitted for an epoch and then predicting under DDP with 2 CPU processes, all in one
    torchrun launch (tests/ddp_kit.py): <stem>/lightning_logs/version_0 and <stem>.csv for each."""
    directory = tmp_path_factory.mktemp("ddp")
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(2 * len(EXPERIMENTS))]  # distinct free ports
    ports = ",".join(str(s.getsockname()[1]) for s in sockets)
    for listening in sockets:
        listening.close()
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run_python([*torchrun, str(ROOT / "tests" / "ddp_kit.py"), *EXPERIMENTS], directory, KIT_PORTS=ports)
    return directory


@experiments
def test_two_cpu_processes_under_ddp_fit_and_predict_every_row_once(config, ddp_runs, isolated):
    stem = Path(config).stem
    trained = torch.load(last_checkpoint(ddp_runs / stem), weights_only=True)
    assert trained["epoch"] == 0 and trained["global_step"] > 0  # fitted under DDP
    with open(ddp_runs / f"{stem}.csv", newline="") as handle:
        header, *lines = list(csv.reader(handle))
    assert header == EXPERIMENTS[config]
    rows = [int(line[0]) for line in lines]
    assert rows == sorted(set(rows))  # merged in order, none twice
    # one process writes the same rows and values: nothing lost, repeated or changed in the merge of the two parts
    main(["predict", "--config", config, "--ckpt_path", last_checkpoint(ddp_runs / stem), "--predictions.path",
          "one.csv", *QUIET])  # fmt: skip
    with open(isolated / "one.csv", newline="") as handle:
        single = list(csv.reader(handle))[1:]
    assert [int(line[0]) for line in single] == rows
    np.testing.assert_allclose(np.array(lines, dtype=float), np.array(single, dtype=float), rtol=1e-6, atol=1e-7)


def test_the_core_imports_no_module_of_the_example():
    core = ["cli", "callbacks", "checkpoints", "checkpoint_io", "export", "batches", "fast", "errors", "__main__"]
    code = f"import sys; import {', '.join(f'linreg_pl.{m}' for m in core)}; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    loaded = {name for name in eval(result.stdout) if name.startswith("linreg_pl")}
    assert {f"linreg_pl.{m}" for m in core} <= loaded
    assert loaded == {"linreg_pl", *(f"linreg_pl.{m}" for m in core)}  # nothing of linreg_pl.regression


def test_a_users_model_by_class_path_fits_and_predicts_with_no_config(isolated):
    user = ["--model", "user_models.Classifier", "--data", "user_models.Blobs", "--trainer.max_epochs", "2"]
    cli = main(["fit", *user, *QUIET])
    assert float(cli.trainer.callback_metrics["val_acc"]) > 0.9  # three well-separated blobs
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()
    main(["predict", *user, "--ckpt_path", last_checkpoint(isolated), "--predictions.path", "p.csv", *QUIET])
    header, *lines = list(csv.reader(open("p.csv", newline="")))
    assert header == ["row", "prediction_0", "prediction_1", "prediction_2"]
    assert len(lines) == 90  # 15% of 600 points
    assert np.allclose([sum(float(v) for v in line[1:]) for line in lines], 1.0, atol=1e-5)  # probabilities


def test_a_monitor_the_model_never_logs_is_one_line_naming_what_it_logs(isolated, capsys):
    # the regression experiment's best checkpoint monitors val/loss; the classifier logs val_loss. Lightning stops
    # the run at the end of the first validation, in its own words
    user = ["--model", "user_models.Classifier", "--data", "user_models.Blobs", "--trainer.max_epochs", "1"]
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", DEFAULT_CONFIG, *user, *QUIET])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: `ModelCheckpoint(monitor='val/loss')` could not find the monitored key in the returned "
        "metrics: ['val_loss', 'val_acc', 'train_loss', 'epoch', 'step']. "
        "HINT: Did you call `log('val/loss', value)` in the `LightningModule`?\n"
    )
    # without validation Lightning only warns, and would never write the best checkpoint: our check stops the run
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", DEFAULT_CONFIG, *user, "--trainer.limit_val_batches", "0", *QUIET])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: ModelCheckpoint monitors 'val/loss', which Classifier never logs; it logs: train_loss. "
        "Monitor one of those (its `monitor` argument in trainer.callbacks), or leave that callback out of the "
        "config\n"
    )


class SkipsEveryOtherBatch(user_models.Classifier):
    """Returns no loss for odd batches, as a model that skips bad batches does: Lightning steps on the others."""

    def training_step(self, batch, batch_idx):
        return None if batch_idx % 2 else super().training_step(batch, batch_idx)


class FolderLogger(Logger):
    """A logger of a layout of its own (as MLflow's or W&B's): it takes a save_dir but has no version_N."""

    def __init__(self, save_dir: str = "logs") -> None:
        super().__init__()
        self._save_dir = save_dir

    @property
    def name(self) -> str:
        return "folder"

    @property
    def version(self) -> str:
        return "run"

    @property
    def save_dir(self) -> str:
        return self._save_dir

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass


def test_the_guards_fit_models_that_skip_batches_validate_every_other_epoch_or_log_their_own_way(isolated):
    user = ["--data", "user_models.Blobs", "--trainer.max_epochs", "2", *QUIET]
    # DivergenceGuard checks the weights when a step returns no loss; the monitor check waits for a validation
    # that runs only every other epoch instead of stopping the run at epoch 1
    cli = main(["fit", "--config", str(ROOT / "tests" / "configs" / "classifier.yaml"), "--model",
                f"{__name__}.SkipsEveryOtherBatch", *user, "--trainer.check_val_every_n_epoch", "2"])  # fmt: skip
    assert cli.trainer.current_epoch == 2 and "val_acc" in cli.trainer.callback_metrics
    assert (version_dir(isolated) / "checkpoints" / "best-epoch=1.ckpt").is_file()  # val_acc, validated at epoch 2
    # a logger that lays out its runs its own way is given no version_N
    main(["fit", "--model", "user_models.Classifier", *user, "--trainer.logger", f"{__name__}.FolderLogger"])
    assert (isolated / "folder" / "run" / "checkpoints" / "last.ckpt").is_file()  # where Lightning puts them
    assert not (isolated / "lightning_logs" / "version_1").exists()


def test_export_names_what_it_cannot_take_as_an_example(isolated, capsys):
    class DictInput(user_models.Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.example_input_array = {"points": torch.zeros(2, 2)}

    run("fit", str(ROOT / "tests" / "configs" / "classifier.yaml"), "--trainer.max_epochs", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["export", "--ckpt_path", last_checkpoint(isolated), "--output", "m.pt2", "--input_shape", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: --input_shape must be sizes >= 1 separated by commas, e.g. 2 or 3,32,32; got '0'\n"
    )
    from linreg_pl.export import export_model

    with pytest.raises(ConfigError, match="the example input must be a tensor or a tuple of tensors, one per input"):
        export_model(DictInput(), DictInput().example_input_array, "m.pt2")
    # a shape given on the command line takes precedence over what the checkpoint holds
    main(["export", "--ckpt_path", last_checkpoint(isolated), "--output", "m.pt2", "--input_shape", "2"])
    assert 'input "points": float32 [batch, 2]' in capsys.readouterr().out
