"""linreg_pl/fast.py and the entry point's collector handling: faster, with the same results, on a user's model
(tests/user_models.py), whose class and identity stay its own."""

from __future__ import annotations

import copy
import csv
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, ROOT, USER_EXPERIMENT, run_user, version_dir
from lightning.pytorch import Callback
from user_models import Classifier

from linreg_pl.cli import build_cli
from linreg_pl.fast import LightningOverheadCuts


def test_the_cuts_change_no_result(isolated):
    cut = run_user("fit", "--trainer.max_epochs", "2")
    plain = run_user("fit", "--trainer.max_epochs", "2", "--trainer.profiler", "null")
    assert isinstance(cut.trainer.profiler, LightningOverheadCuts)
    assert not isinstance(plain.trainer.profiler, LightningOverheadCuts)
    for name, value in plain.model.state_dict().items():
        assert torch.equal(cut.model.state_dict()[name], value), name
    logged = [list(csv.DictReader((version_dir(isolated, v) / "metrics.csv").open())) for v in (0, 1)]
    assert logged[0] == logged[1]
    assert len([row for row in logged[0] if row["train_loss"]]) == 2  # one per epoch


HOOKS = [hook for hook in dir(Callback) if hook.startswith("on_")]


class Watch(Callback):
    """Implements one per-batch hook and looks, mid-run, at itself and the model: nothing of a user's is altered."""

    def __init__(self) -> None:
        self.batches, self.callable_hooks, self.model_class, self.pickled = 0, set(), None, b""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self.callable_hooks |= {
            hook for hook in dir(Callback) if hook.startswith("on_") and callable(getattr(self, hook))
        }
        self.model_class = type(pl_module)
        if self.batches == 1:  # as MLflow's log_model and users' own export code do, mid-fit
            torch.save(pl_module, io.BytesIO())
            self.pickled = pickle.dumps(pl_module)
            copy.deepcopy(pl_module)


# trainer.fit called directly, without main()'s filter for this warning from inside Lightning
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
def test_a_run_leaves_a_users_model_and_callbacks_as_they_are(isolated):
    cli = build_cli(["--config", USER_EXPERIMENT, "--trainer.max_epochs", "2", *QUIET], run=False)
    watch = Watch()
    cli.trainer.callbacks.append(watch)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert watch.batches == cli.trainer.global_step == 2 * len(cli.datamodule.train_dataloader())
    # mid-run every hook of the callback was its own, the model was of its own class and pickled as itself
    assert watch.callable_hooks == set(HOOKS)
    assert watch.model_class is Classifier and type(pickle.loads(watch.pickled)) is Classifier


def test_the_entry_point_keeps_the_collector_off_the_imports(isolated):
    # no collection runs while the CLI's modules import; afterwards they are frozen and the collector is on
    probe = """
import gc, sys
import linreg_pl.__main__ as entry
unfrozen_collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and unfrozen_collections.append(gc.get_freeze_count() == 0))
sys.argv = ["linreg-pl", "--help"]
try:
    entry.run()
except SystemExit:
    pass
print(any(unfrozen_collections), gc.get_freeze_count() > 100_000, gc.isenabled(), file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.split()[-3:] == ["False", "True", "True"]
    assert "fit" in done.stdout  # the CLI's help ran


@pytest.mark.parametrize(
    "command",
    # `python -m linreg_pl` is what every subprocess test runs: this one with the slow tests
    [
        pytest.param([sys.executable, "-m", "linreg_pl"], marks=pytest.mark.slow),
        [str(Path(sys.executable).parent / "linreg-pl")],
    ],
)
def test_python_dash_m_and_the_script_run_a_fit(command, isolated):
    fit = subprocess.run(
        [*command, "fit", "--config", USER_EXPERIMENT, "--trainer.max_epochs", "1", *QUIET],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")])),
    )
    assert fit.returncode == 0, fit.stderr
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in fit.stderr
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()


def test_the_module_pickles_and_copies_during_and_after_fit(isolated):
    cli = run_user("fit", "--trainer.max_epochs", "1", "--trainer.callbacks+", "user_models.SavesTheModule")
    saved = torch.load("module.pt", weights_only=False)
    assert type(saved) is Classifier
    for name, value in cli.model.state_dict().items():
        assert torch.equal(saved.state_dict()[name].cpu(), value.cpu()), name
    assert type(copy.deepcopy(cli.model)) is Classifier and type(pickle.loads(pickle.dumps(cli.model))) is Classifier
