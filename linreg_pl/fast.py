"""Speed-ups for tiny models that reach into Lightning's internals, all in one place.

    # configs/default.yaml turns them on with one callback:
    trainer:
      callbacks:
        - linreg_pl.fast.LightningOverheadCuts

A step of the default experiment (batch 10, 2 features) is a few microseconds of arithmetic;
the rest is Lightning's per-step bookkeeping. Each cut below removes work Lightning repeats on
every step, leaves behaviour unchanged, and was measured on the default experiment with
`python benchmarks/throughput.py --sections loops` (2-core CPU, torch 2.13, lightning 2.6.6):

- `NoOpProfiler`: Lightning wraps every hook call, ~40 a step, in `trainer.profiler.profile(name)`;
  the default `PassThroughProfiler` builds a fresh generator-based context manager each time.
  One shared no-op context instead: 14% of the step.
- The model's `_current_fx_name`: Lightning records the running hook in this attribute around every
  hook call, ~44 a step, through `nn.Module.__setattr__`, which first searches the module's
  parameters, buffers and submodules for the name. A plain `object.__setattr__` for that one name:
  17% of the step.

Dropped after measuring (under 5% of a step): caching `ModelCheckpoint.state_key` (2%) and skipping
the batch-transfer walk for batches already on the device (no measurable gain).

To remove all of it: delete this file and its line in `configs/default.yaml`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """Profiles nothing, and hands out one shared do-nothing context instead of making one per call."""

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING


class _PlainHookName:
    """Mixed in before the model's class: `_current_fx_name` is a plain string attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class LightningOverheadCuts(Callback):
    """Applies the cuts above for the length of one `fit`/`validate`/`test`/`predict`, then undoes them.

    A profiler the user chose (`--trainer.profiler simple`) is left alone.
    """

    def __init__(self) -> None:
        self._saved: tuple[Any, type] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        model_class = type(pl_module)
        self._saved = (trainer.profiler, model_class)
        if type(trainer.profiler) is PassThroughProfiler:
            trainer.profiler = NoOpProfiler()
        pl_module.__class__ = _fast_class(model_class)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, trainer.state.fn or "")

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._saved is not None:
            trainer.profiler, pl_module.__class__ = self._saved
            self._saved = None


_FAST_CLASSES: dict[type, type] = {}


def _fast_class(model_class: type) -> type:
    # a subclass with the same name, made once per model class
    if model_class not in _FAST_CLASSES:
        _FAST_CLASSES[model_class] = type(model_class.__name__, (_PlainHookName, model_class), {})
    return _FAST_CLASSES[model_class]
