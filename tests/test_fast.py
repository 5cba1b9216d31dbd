"""linreg_pl/fast.py and the entry point's collector handling: faster, with the same results."""

from __future__ import annotations

import csv
import gc
import subprocess
import sys

import pytest
import torch
from conftest import DEFAULT_CONFIG, QUIET, ROOT, run_cli, version_dir
from lightning.pytorch import Callback

from linreg_pl.cli import build_cli
from linreg_pl.fast import PER_BATCH_HOOKS, LightningOverheadCuts
from linreg_pl.model import LinearRegression


def test_the_cuts_change_no_result(isolated):
    cut = run_cli("fit", "--trainer.max_epochs", "2")
    plain = run_cli("fit", "--trainer.max_epochs", "2", "--trainer.profiler", "null")
    assert isinstance(cut.trainer.profiler, LightningOverheadCuts)
    assert not isinstance(plain.trainer.profiler, LightningOverheadCuts)
    assert torch.equal(cut.model.linear.weight, plain.model.linear.weight)
    assert torch.equal(cut.model.linear.bias, plain.model.linear.bias)
    logged = [list(csv.DictReader((version_dir(isolated, v) / "metrics.csv").open())) for v in (0, 1)]
    assert logged[0] == logged[1]
    assert len([row for row in logged[0] if row["train/loss"]]) == 2  # one per epoch


class HookWatch(Callback):
    """Implements one per-batch hook and looks, while training, at what the run did to the others."""

    def __init__(self) -> None:
        self.batches = 0
        self.inherited_hooks_seen: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self.inherited_hooks_seen |= {hook for hook in PER_BATCH_HOOKS if callable(getattr(self, hook))}
        self.model_class = type(pl_module)


# trainer.fit called directly, without main()'s filter for this warning from inside Lightning
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
def test_implemented_hooks_still_run_and_everything_is_put_back(isolated):
    cli = build_cli(["--trainer.max_epochs", "2", *QUIET], run=False)
    watch = HookWatch()
    cli.trainer.callbacks.append(watch)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert watch.batches == cli.trainer.global_step == 160
    # during the run only the implemented hook was callable, and the model had the fast subclass
    assert watch.inherited_hooks_seen == {"on_train_batch_end"}
    assert watch.model_class is not LinearRegression and issubclass(watch.model_class, LinearRegression)
    # afterwards: the model's own class, and every callback's inherited hooks back
    assert type(cli.model) is LinearRegression
    for callback in cli.trainer.callbacks:
        assert not set(PER_BATCH_HOOKS) & set(vars(callback))
        assert all(callable(getattr(callback, hook)) for hook in PER_BATCH_HOOKS)


def test_python_dash_m_runs_the_cli_and_freezes_the_imports(isolated):
    # the entry point's collector handling: garbage made after the imports is still collected
    probe = (
        "import gc, sys; import linreg_pl.__main__ as entry; import linreg_pl.cli as cli;"
        "cli.main = lambda: print(gc.get_freeze_count() > 100_000, gc.isenabled());"
        "entry.run()"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
    fit = subprocess.run(
        [sys.executable, "-m", "linreg_pl", "fit", "--config", DEFAULT_CONFIG, "--trainer.max_epochs", "1", *QUIET],
        capture_output=True,
        text=True,
        cwd=isolated,
    )
    assert fit.returncode == 0, fit.stderr
    assert "epoch 1/1: train/loss" in fit.stdout
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()
    assert gc.get_freeze_count() == 0  # nothing of this in the test process itself
    assert (ROOT / "linreg_pl" / "__main__.py").is_file()
