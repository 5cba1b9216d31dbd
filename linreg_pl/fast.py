"""Speed-ups for tiny models that reach into Lightning's internals, all in one place.

    # configs/base.yaml turns them on with one line:
    trainer:
      profiler: linreg_pl.fast.LightningOverheadCuts

A step of the default experiment (batch 10, 2 features) is a few microseconds of arithmetic;
the rest is Lightning's per-step bookkeeping. Each cut below removes work Lightning repeats on
every step and leaves behaviour unchanged. Each was measured on the default experiment, added one
at a time, with `python benchmarks/throughput.py --sections cuts --repeats 8` (median step of 8
interleaved runs; docs/speed.md has the figures).

- A no-op profiler: Lightning wraps every hook call, ~40 a step, in `trainer.profiler.profile(name)`;
  the default `PassThroughProfiler` builds a fresh generator-based context manager each time.
  One shared no-op context instead.
- Callback hooks nobody wrote: Lightning calls each per-batch hook (6 a training step) on every
  callback, whether the callback implements it or not, and each call first builds the profiler's
  action name (for a `ModelCheckpoint`, `state_key` formats a dict). Lightning skips a hook that is
  not callable, so for the length of a run each callback's inherited, empty per-batch hooks are set
  to None on the instance (and put back when the run ends).

Dropped: giving the model a plain `_current_fx_name` attribute (Lightning sets it ~44 times a step through
`nn.Module.__setattr__`) took swapping the model's class for a generated subclass, which broke pickling the
module during `fit`; the user's objects keep their class, and the benchmark's `cuts` section reports what that
cost.

All come as one profiler rather than a callback: Lightning calls every hook of every callback on
every step, so a callback would give back part of what it saves. Choosing another profiler
(`--trainer.profiler simple`) turns them all off.

Dropped after measuring (under 5% of a step): caching `ModelCheckpoint.state_key` (2%) and skipping
the batch-transfer walk for batches already on the device (no measurable gain).

To remove all of it: delete this file and its line in `configs/base.yaml`.

(The process's start-up is not Lightning's business: `linreg_pl/__main__.py` keeps Python's garbage
collector off the imported modules, with its own measurement.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """Profiles nothing, and hands out one shared do-nothing context instead of making one per call."""

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING


# the callback hooks Lightning calls for every batch
PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


class LightningOverheadCuts(NoOpProfiler):
    """The no-op profiler, which also, for the length of a run, switches off the per-batch hooks the callbacks
    inherit without implementing.

    Lightning hands a profiler the model (`_lightning_module`), already attached to its trainer and callbacks,
    just before `setup`: the empty hooks are hidden behind None on the callback instances (their class is left
    alone). That is undone in `teardown`, which Lightning calls after a run that ends normally, and by
    `_UndoOnException` after one that raises.
    """

    def __init__(self) -> None:
        super().__init__()
        self._silenced: list[tuple[Callback, str]] = []
        self._undo_callback = _UndoOnException(self)
        self._callbacks: list[Callback] = []  # the trainer's list, which holds `_undo_callback` during a run

    @override
    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        super().setup(stage, local_rank, log_dir)
        module = getattr(self, "_lightning_module", None)
        if module is None:
            return
        callbacks = self._callbacks = module.trainer.callbacks
        if self._undo_callback not in callbacks:
            callbacks.append(self._undo_callback)
        if not self._silenced:
            for callback in callbacks:
                for hook in PER_BATCH_HOOKS:
                    if hook not in vars(callback) and getattr(type(callback), hook) is getattr(Callback, hook):
                        setattr(callback, hook, None)  # Lightning calls a hook only `if callable(fn)`
                        self._silenced.append((callback, hook))

    @override
    def teardown(self, stage: str | None) -> None:
        self._undo()
        if self._undo_callback in self._callbacks:
            self._callbacks.remove(self._undo_callback)
        super().teardown(stage)

    def _undo(self) -> None:
        for callback, hook in self._silenced:
            if vars(callback).get(hook, False) is None:  # still ours: the class's (empty) hook shows again
                delattr(callback, hook)
        self._silenced = []


class _UndoOnException(Callback):
    """Lightning tears a profiler down only after a run that ends normally; after one that raises (an
    error, Ctrl-C, SIGTERM) it calls the callbacks' `on_exception` instead, where this one undoes the cuts.
    """

    def __init__(self, cuts: LightningOverheadCuts) -> None:
        self.cuts = cuts

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.cuts._undo()
