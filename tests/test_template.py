"""The template kit: the core (CLI, checkpoints, predictions file, export, DDP) against whatever model and data
module an experiment's config names. Keep this file when you start your own project and add your config to
EXPERIMENTS, with what it expects: every test then runs your model through every subcommand, and skips, saying
why, what your model does not have (a `test_step`, a `predict_step`, a `forward` to export).

Here it runs the regression example (configs/default.yaml) and models that are not regression, written as a user
would in tests/user_models.py: a classifier with integer targets, a two-output regressor, an image autoencoder on
dict batches with OneCycleLR, a model with two inputs (one an embedding index) and one with `nn.LazyLinear`.
"""

from __future__ import annotations

import copy
import csv
import importlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import user_models
import yaml
from conftest import QUIET, ROOT, version_dir
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from linreg_pl.cli import main
from linreg_pl.errors import ConfigError

USER_CONFIGS = ROOT / "tests" / "configs"
# the regression example's experiment; README step 6 deletes it with the example: delete its line in EXPERIMENTS
EXAMPLE_CONFIG = str(ROOT / "configs" / "default.yaml")


@dataclass(frozen=True)
class Experiment:
    """What the kit expects of one experiment config.

    Args:
        header: the predictions file's header: `row`, then one column per output of `predict_step` (a dict's keys,
            `prediction_<i>` for a tuple, `_<j>` after the name of an [n, k] output); None: it does not predict.
        args: added to every run of it, e.g. `--trainer.limit_train_batches 4` to keep a big data set's kit runs
            short (the resume test trains 2 epochs, the others 1 or 2).
        skip: kit steps it does not take ("fit", "resume", "validate", "test", "predict", "export", "ddp"), each
            with the reason the test prints when it skips.
    """

    header: list[str] | None
    args: tuple[str, ...] = ()
    skip: Mapping[str, str] = field(default_factory=dict)


EXPERIMENTS = {
    str(USER_CONFIGS / "classifier.yaml"): Experiment(["row", "prediction_0", "prediction_1", "prediction_2"]),
    str(USER_CONFIGS / "two_outputs.yaml"): Experiment(["row", "sum", "difference"]),
    str(USER_CONFIGS / "autoencoder.yaml"): Experiment(
        ["row", "code_0", "code_1", "error"],
        args=("--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "2"),
    ),
    str(USER_CONFIGS / "stores.yaml"): Experiment(None),
    str(USER_CONFIGS / "lazy.yaml"): Experiment(
        ["row", "sum", "difference"],
        skip={"ddp": "DistributedDataParallel refuses uninitialised (lazy) parameters; it needs a dry run first"},
    ),
    EXAMPLE_CONFIG: Experiment(["row", "prediction"]),
}
experiments = pytest.mark.parametrize("config", list(EXPERIMENTS), ids=lambda c: Path(c).stem)
# the hook a kit step needs in the model's class; the step skips, saying so, for a model without it
HOOKS = {"validate": "validation_step", "test": "test_step", "predict": "predict_step", "export": "forward"}


def model_class(config: str) -> type | None:
    """The LightningModule class `config` names (`model: class_path`), or None if it names none."""
    model = (yaml.safe_load(Path(config).read_text()) or {}).get("model")
    class_path = model.get("class_path") if isinstance(model, dict) else model
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def why_not(config: str, step: str) -> str | None:
    """Why the experiment does not take a kit step (it says so, or its model lacks the hook), or None."""
    experiment, stem = EXPERIMENTS[config], Path(config).stem
    if step in experiment.skip:
        return f"{stem}: {experiment.skip[step]}"
    cls = model_class(config)
    hook = HOOKS.get(step)
    if cls is not None and hook is not None and getattr(cls, hook) is getattr(LightningModule, hook):
        return f"{stem}: {cls.__name__} has no {hook}"
    if step == "predict" and experiment.header is None:
        return f"{stem}: the experiment states no predictions header"
    return None


def take(config: str, step: str) -> Experiment:
    """The experiment, after skipping (with the reason) a step it does not take or its model cannot."""
    reason = why_not(config, step)
    if reason:
        pytest.skip(reason)
    return EXPERIMENTS[config]


def run(subcommand: str, config: str, *args: str):
    return main([subcommand, "--config", config, *EXPERIMENTS[config].args, *args, *QUIET])


def last_checkpoint(root: Path, version: int = 0) -> str:
    return str(version_dir(root, version) / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """`fitted(config)`: the CLI of a 2-epoch run of the experiment (its directory is `cli.trainer.default_root_dir`),
    fitted once per module on first use and shared by the tests that only read it (copy the model before changing
    it). Built inside the first test that asks, so that the test's own fixtures (conftest's `isolated`) apply."""
    runs: dict[str, Any] = {}

    def fit(config: str):
        if config not in runs:
            root = tmp_path_factory.mktemp(Path(config).stem)
            runs[config] = run("fit", config, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(root))
        return runs[config]

    return fit


def root_of(cli) -> Path:
    return Path(cli.trainer.default_root_dir)


def forward_inputs(model: torch.nn.Module, batch: Any) -> list[torch.Tensor]:
    """A batch as `model.forward`'s inputs: a dict by parameter name, a tuple's first items in order (the rest are
    targets), a tensor as the one input."""
    parameters = inspect.signature(model.forward).parameters.values()
    names = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    if isinstance(batch, Mapping):
        assert set(names) <= set(batch), f"forward takes {names}, the batch has {list(batch)}"
        return [batch[name] for name in names]
    return list(batch[: len(names)]) if isinstance(batch, (tuple, list)) else [batch]


def named_outputs(results: Any, name: str = "predictions") -> dict[str, torch.Tensor]:
    """What forward (or a file) returned, by the names the exported file gives them."""
    if isinstance(results, torch.Tensor):
        return {name: results}
    if isinstance(results, Mapping):
        return {str(key): value for key, value in results.items()}
    return {f"{name}_{i}": value for i, value in enumerate(results)}


def prediction_columns(prediction: Any) -> dict[str, list[float]]:
    """The predictions file's columns for one predict_step result: [n] one column, [n, k] k of them."""
    columns = {}
    for name, value in named_outputs(prediction, "prediction").items():
        flat = value.detach().float().reshape(len(value), -1)
        if value.ndim == 1:
            columns[name] = flat[:, 0].tolist()
        else:
            columns.update({f"{name}_{j}": flat[:, j].tolist() for j in range(flat.shape[1])})
    return columns


def first_batch(datamodule) -> Any:
    """The first validation batch, else predict, else training batch: one that forward's inputs come from."""
    for loader in ("val_dataloader", "predict_dataloader", "train_dataloader"):
        try:
            return next(iter(getattr(datamodule, loader)()))
        except (MisconfigurationException, NotImplementedError, StopIteration):
            continue  # Lightning's "`val_dataloader` must be implemented", or an empty split
    pytest.fail(f"{type(datamodule).__name__} gives no batch")


def read_csv(path: Path | str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        header, *lines = list(csv.reader(handle))
    return header, lines


class StopAfterFirstEpoch(Callback):
    """Stops a run at the end of its first epoch as a preempted job stops: the run was set up for all of its
    epochs (max_epochs, the scheduler's total steps), and its last.ckpt is the end of epoch 0."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


@experiments
def test_a_fast_dev_run_fits_one_batch(config, isolated):
    take(config, "fit")
    cli = run("fit", config, "--trainer.fast_dev_run", "true")
    assert cli.trainer.global_step == 1
    assert not list(isolated.rglob("*.ckpt"))  # fast_dev_run writes no checkpoint


@experiments
def test_resuming_an_interrupted_run_gives_the_same_bits_as_a_run_never_stopped(config, fitted, isolated):
    # the same run (max_epochs 2) stopped after its first epoch and resumed from its last.ckpt: a scheduler sized
    # for the whole run (OneCycleLR from estimated_stepping_batches) continues where it was, to its own total
    take(config, "resume")
    straight = torch.load(last_checkpoint(root_of(fitted(config))), weights_only=True)
    run("fit", config, "--trainer.max_epochs", "2", "--trainer.callbacks+", f"{__name__}.StopAfterFirstEpoch")
    interrupted = torch.load(last_checkpoint(isolated), weights_only=True)
    assert interrupted["epoch"] == 0 and 0 < interrupted["global_step"] < straight["global_step"]
    resumed = run("fit", config, "--trainer.max_epochs", "2", "--ckpt_path", last_checkpoint(isolated))
    assert resumed.trainer.current_epoch == 2
    after = torch.load(last_checkpoint(isolated, 1), weights_only=True)
    assert after["global_step"] == straight["global_step"]
    assert after["state_dict"].keys() == straight["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][name], value) for name, value in straight["state_dict"].items())
    assert after["lr_schedulers"] == straight["lr_schedulers"]


@experiments
@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_from_the_checkpoint_give_the_live_models_metrics(subcommand, config, fitted, isolated):
    take(config, subcommand)
    cli = fitted(config)
    live = getattr(cli.trainer, subcommand)(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    scored = run(subcommand, config, "--ckpt_path", last_checkpoint(root_of(cli))).trainer.callback_metrics
    assert live and {name: float(scored[name]) for name in live} == pytest.approx(live, rel=1e-6)


@experiments
def test_predict_from_the_checkpoint_writes_what_the_live_model_predicts(config, fitted, isolated):
    experiment = take(config, "predict")
    cli = fitted(config)
    ckpt = last_checkpoint(root_of(cli))
    predicted = run("predict", config, "--ckpt_path", ckpt, "--predictions.path", "out.csv")
    header, lines = read_csv("out.csv")
    assert header == experiment.header
    # independently: the live model's predict_step on every predict batch, rows numbered in the loader's order
    model, expected = copy.deepcopy(cli.model).eval(), []
    with torch.no_grad():
        for batch_idx, batch in enumerate(predicted.datamodule.predict_dataloader()):
            columns = prediction_columns(model.predict_step(batch, batch_idx))
            assert ["row", *columns] == experiment.header
            expected += [list(values) for values in zip(*columns.values(), strict=True)]
    assert len(lines) == len(expected) > 0
    rows = [int(line[0]) for line in lines]
    assert rows == sorted(rows)
    written = np.array([[float(v) for v in line[1:]] for line in lines])
    np.testing.assert_allclose(written[np.argsort(rows)], np.array(expected, dtype=float), rtol=1e-6, atol=1e-7)


@experiments
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_export_with_no_flags_writes_a_file_that_computes_what_forward_computes(
    config, suffix, fitted, isolated, capsys
):
    take(config, "export")
    cli = fitted(config)
    capsys.readouterr()
    main(["export", "--ckpt_path", last_checkpoint(root_of(cli)), "--output", f"model{suffix}"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote model{suffix} (")
    model = copy.deepcopy(cli.model).eval()
    inputs = [
        tensor[:7] for tensor in forward_inputs(model, first_batch(cli.datamodule))
    ]  # any batch size: the batch dimension is free
    with torch.no_grad():
        expected = named_outputs(model(*inputs))
    names = [p.name for p in inspect.signature(model.forward).parameters.values()][: len(inputs)]
    if suffix == ".pt2":
        with torch.no_grad():
            actual = named_outputs(torch.export.load(f"model{suffix}").module()(*inputs))
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(f"model{suffix}", providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        results = session.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
        actual = {o.name: torch.from_numpy(r) for o, r in zip(session.get_outputs(), results, strict=True)}
    assert list(actual) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-5, atol=1e-6)

    def shape(kind: str, name: str, tensor: torch.Tensor) -> str:
        sizes = ", ".join(["batch", *map(str, tensor.shape[1:])])
        return f'{kind} "{name}": {str(tensor.dtype).removeprefix("torch.")} [{sizes}]'

    inputs_out = [shape("input", name, t) for name, t in zip(names, inputs, strict=True)]
    assert out[1:] == inputs_out + [shape("output", name, t) for name, t in expected.items()]


# DDP: every experiment fitted and predicting under DDP with 2 CPU processes, in one torchrun launch
# (tests/ddp_kit.py); the first that predicts also predicts without --predictions.path (the run's log directory).
# A launch that hangs is killed with its process group: it fails its tests, it never blocks the suite.
DDP_TIMEOUT = 240  # seconds for the whole launch (about 20 on 2 shared cores)
DEFAULT_PATH_TIMEOUT = 30  # seconds for the default-path predict, the launch's last command (about 3)


@dataclass
class Launch:
    directory: Path
    returncode: int | None
    output: str
    failure: str | None  # what went wrong: the time limit it ran past, or the exit status

    def tail(self) -> str:
        return f"{self.failure}\n{self.output[-3000:]}"


def ddp_experiments() -> list[str]:
    return [config for config in EXPERIMENTS if "ddp" not in EXPERIMENTS[config].skip]


def predicts(config: str) -> bool:
    return why_not(config, "predict") is None


DEFAULT_PATH_CONFIG = next(config for config in ddp_experiments() if predicts(config))


def launch(command: list[str], cwd: Path, marker: Path, **environment: str) -> Launch:
    """`python *command` in a process group of its own, output to a file; the group is killed (SIGKILL) after
    DDP_TIMEOUT seconds, or DEFAULT_PATH_TIMEOUT seconds after `marker` appears."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **environment)
    log = cwd / "launch.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, *command], cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started, failure, marked = time.monotonic(), None, None
        while process.poll() is None:
            now = time.monotonic()
            if marked is None and marker.exists():
                marked = now
            if now - started > DDP_TIMEOUT:
                failure = f"the launch ran past {DDP_TIMEOUT} s"
            elif marked is not None and now - marked > DEFAULT_PATH_TIMEOUT:
                failure = f"predict without --predictions.path ran past {DEFAULT_PATH_TIMEOUT} s (a hang)"
            if failure:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.1)
    if failure is None and process.returncode != 0:
        failure = f"the launch exited with status {process.returncode}"
    return Launch(cwd, process.returncode, log.read_text(), failure)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Launch:
    """<stem>/lightning_logs/version_0 (the fit), <stem>.csv (its predictions) for each experiment, and for
    DEFAULT_PATH_CONFIG a predictions.csv in its predict run's log directory, written after `explicit.done`."""
    directory = tmp_path_factory.mktemp("ddp")
    configs = ddp_experiments()
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(2 * len(configs) + 1)]  # distinct free ports
    ports = ",".join(str(s.getsockname()[1]) for s in sockets)
    for listening in sockets:
        listening.close()
    spec = [
        {
            "config": c,
            "args": list(EXPERIMENTS[c].args),
            "predict": predicts(c),
            "default_path": c == DEFAULT_PATH_CONFIG,
        }
        for c in configs
    ]
    (directory / "kit.json").write_text(json.dumps(spec))
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*torchrun, str(ROOT / "tests" / "ddp_kit.py"), "kit.json"]
    return launch(command, directory, directory / "explicit.done", KIT_PORTS=ports)


@experiments
def test_two_cpu_processes_under_ddp_fit_and_predict_every_row_once(config, ddp_runs, isolated):
    take(config, "ddp")
    stem = Path(config).stem
    assert (ddp_runs.directory / "explicit.done").exists(), ddp_runs.tail()
    trained = torch.load(last_checkpoint(ddp_runs.directory / stem), weights_only=True)
    assert trained["epoch"] == 0 and trained["global_step"] > 0  # fitted under DDP
    experiment = take(config, "predict")
    header, lines = read_csv(ddp_runs.directory / f"{stem}.csv")
    assert header == experiment.header
    rows = [int(line[0]) for line in lines]
    assert rows == sorted(set(rows))  # merged in order, none twice
    # one process writes the same rows and values: nothing lost, repeated or changed in the merge of the two parts
    run("predict", config, "--ckpt_path", last_checkpoint(ddp_runs.directory / stem), "--predictions.path", "one.csv")
    single = read_csv(isolated / "one.csv")[1]
    assert [int(line[0]) for line in single] == rows
    np.testing.assert_allclose(np.array(lines, dtype=float), np.array(single, dtype=float), rtol=1e-6, atol=1e-7)


def test_predict_under_ddp_without_a_path_writes_predictions_csv_in_its_run_directory(ddp_runs):
    # every rank must take part in what finds the log directory (trainer.log_dir is a collective): with rank 0
    # alone asking, this predict hung forever (it is killed after DEFAULT_PATH_TIMEOUT s, and fails here)
    stem = Path(DEFAULT_PATH_CONFIG).stem
    assert ddp_runs.failure is None, ddp_runs.tail()
    written = sorted((ddp_runs.directory / stem / "lightning_logs").glob("version_*/predictions.csv"))
    assert [path.parent.name for path in written] == ["version_2"]  # after the fit's version_0, the predict's 1
    assert read_csv(written[0]) == read_csv(ddp_runs.directory / f"{stem}.csv")


# the modules of the example: the aliases of the class paths that old checkpoints name (README step 6 deletes them)
EXAMPLE_ALIASES = {"data", "model", "streaming"}


def test_the_core_imports_no_module_of_the_example():
    core = sorted(p.stem for p in (ROOT / "linreg_pl").glob("*.py") if p.stem not in {"__init__", *EXAMPLE_ALIASES})
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
    header, lines = read_csv("p.csv")
    assert header == ["row", "prediction_0", "prediction_1", "prediction_2"]
    assert len(lines) == 90  # 15% of 600 points
    assert np.allclose([sum(float(v) for v in line[1:]) for line in lines], 1.0, atol=1e-5)  # probabilities


def test_a_monitor_the_model_never_logs_is_one_line_naming_what_it_logs(isolated, capsys):
    # the classifier experiment's best checkpoint monitors val_acc; the two-output regressor logs only losses.
    # Lightning stops the run at the end of the first validation, in its own words
    user = ["--model", "user_models.TwoOutputRegressor", "--data", "user_models.Plane", "--trainer.max_epochs", "1"]
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(USER_CONFIGS / "classifier.yaml"), *user, *QUIET])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: `ModelCheckpoint(monitor='val_acc')` could not find the monitored key in the returned "
        "metrics: ['val_loss', 'train_loss', 'epoch', 'step']. "
        "HINT: Did you call `log('val_acc', value)` in the `LightningModule`?\n"
    )
    # without validation Lightning only warns, and would never write the best checkpoint: our check stops the run
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                "fit",
                "--config",
                str(USER_CONFIGS / "classifier.yaml"),
                *user,
                "--trainer.limit_val_batches",
                "0",
                *QUIET,
            ]
        )
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: ModelCheckpoint monitors 'val_acc', which TwoOutputRegressor never logged; it logged: "
        "train_loss. Monitor one of those (its `monitor` argument in trainer.callbacks), or leave that callback out "
        "of the config\n"
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
    cli = main(["fit", "--config", str(USER_CONFIGS / "classifier.yaml"), "--model",
                f"{__name__}.SkipsEveryOtherBatch", *user, "--trainer.check_val_every_n_epoch", "2"])  # fmt: skip
    assert cli.trainer.current_epoch == 2 and "val_acc" in cli.trainer.callback_metrics
    assert (version_dir(isolated) / "checkpoints" / "best-epoch=1.ckpt").is_file()  # val_acc, validated at epoch 2
    # a logger that lays out its runs its own way is given no version_N
    main(["fit", "--model", "user_models.Classifier", *user, "--trainer.logger", f"{__name__}.FolderLogger"])
    assert (isolated / "folder" / "run" / "checkpoints" / "last.ckpt").is_file()  # where Lightning puts them
    assert not (isolated / "lightning_logs" / "version_1").exists()


def test_export_names_what_it_cannot_take_as_an_example(fitted, isolated, capsys):
    class DictInput(user_models.Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.example_input_array = {"points": torch.zeros(2, 2)}

    ckpt = last_checkpoint(root_of(fitted(str(USER_CONFIGS / "classifier.yaml"))))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["export", "--ckpt_path", ckpt, "--output", "m.pt2", "--input_shape", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "linreg-pl: error: --input_shape must be sizes >= 1 separated by commas, e.g. 2 or 3,32,32; got '0'\n"
    )
    from linreg_pl.export import export_model

    # a dict example is matched to forward's parameters by name; keys that are not its parameters are one line
    assert export_model(DictInput(), DictInput().example_input_array, "m.pt2").inputs == {
        "points": (torch.float32, (2,))
    }
    with pytest.raises(ConfigError) as error:
        export_model(DictInput(), {"xy": torch.zeros(2, 2)}, "m.pt2")
    assert str(error.value) == (
        "cannot export DictInput: forward takes (points), the example input is a dict of (xy); name its keys after "
        "forward's parameters"
    )
    # a shape given on the command line takes precedence over what the checkpoint holds
    main(["export", "--ckpt_path", ckpt, "--output", "m.pt2", "--input_shape", "2"])
    assert 'input "points": float32 [batch, 2]' in capsys.readouterr().out
