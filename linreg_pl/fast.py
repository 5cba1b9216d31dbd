"""Speed-ups for tiny models that reach into Lightning's internals, all in one place.

    # configs/default.yaml turns them on with one line:
    trainer:
      profiler: linreg_pl.fast.LightningOverheadCuts

A step of the default experiment (batch 10, 2 features) is a few microseconds of arithmetic;
the rest is Lightning's per-step bookkeeping. Each cut below removes work Lightning repeats on
every step, leaves behaviour unchanged, and was measured on the default experiment with
`python benchmarks/throughput.py --sections loops` (2-core CPU, torch 2.13, lightning 2.6.6):

- A no-op profiler: Lightning wraps every hook call, ~40 a step, in `trainer.profiler.profile(name)`;
  the default `PassThroughProfiler` builds a fresh generator-based context manager each time.
  One shared no-op context instead: 14% of the step.
- The model's `_current_fx_name`: Lightning records the running hook in this attribute around every
  hook call, ~44 a step, through `nn.Module.__setattr__`, which first searches the module's
  parameters, buffers and submodules for the name. A plain `object.__setattr__` for that one name:
  17% of the step.

Both come as one profiler rather than a callback: Lightning calls every hook of every callback on
every step, so a callback would give back part of what it saves. Choosing another profiler
(`--trainer.profiler simple`) turns both off.

Dropped after measuring (under 5% of a step): caching `ModelCheckpoint.state_key` (2%) and skipping
the batch-transfer walk for batches already on the device (no measurable gain).

To remove all of it: delete this file and its line in `configs/default.yaml`.
"""

from __future__ import annotations

import contextlib
from typing import Any

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


class LightningOverheadCuts(NoOpProfiler):
    """The no-op profiler, which also gives the model a plain `_current_fx_name` for the length of a run.

    Lightning hands a profiler the model (`_lightning_module`) just before `setup` and calls `teardown`
    when the run is over: the model's class is swapped for a subclass with the plain attribute store in
    between, and swapped back after.
    """

    def __init__(self) -> None:
        super().__init__()
        self._swapped: tuple[Any, type] | None = None

    @override
    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        super().setup(stage, local_rank, log_dir)
        module = getattr(self, "_lightning_module", None)
        if module is not None and self._swapped is None:
            model_class = module.__class__  # a weak proxy of the model: `type()` would name the proxy
            self._swapped = (module, model_class)
            module.__class__ = _fast_class(model_class)

    @override
    def teardown(self, stage: str | None) -> None:
        if self._swapped is not None:
            module, model_class = self._swapped
            self._swapped = None
            with contextlib.suppress(ReferenceError):  # a model already gone needs nothing back
                module.__class__ = model_class
        super().teardown(stage)


_FAST_CLASSES: dict[type, type] = {}


def _fast_class(model_class: type) -> type:
    # a subclass with the same name, made once per model class
    if model_class not in _FAST_CLASSES:
        _FAST_CLASSES[model_class] = type(model_class.__name__, (_PlainHookName, model_class), {})
    return _FAST_CLASSES[model_class]
