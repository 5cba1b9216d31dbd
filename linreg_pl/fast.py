"""Speed-ups for small models that reach into Lightning's internals, all in one place; `linreg_pl/base.yaml` turns
them on with `trainer.profiler: linreg_pl.fast.LightningOverheadCuts`. To remove them: delete this file and that line.

A step of the default experiment is a few microseconds of arithmetic; the rest is Lightning's bookkeeping. Two cuts,
each measured by `python benchmarks/throughput.py --sections cuts` (figures in docs/speed.md):
- a no-op profiler: Lightning wraps ~40 hook calls a step in `trainer.profiler.profile(name)`, and the default
  `PassThroughProfiler` builds a context manager for each; here one shared do-nothing context serves them all;
- callback hooks nobody wrote: Lightning calls every per-batch hook of every callback, implemented or not, and skips
  one that is not callable; for the length of a run the inherited, empty ones are None on the instance.
One profiler rather than a callback: a callback would itself be called on every hook. No object changes its class
(a subclass swap that saved Lightning's `_current_fx_name` bookkeeping broke pickling the module: dropped).
"""

from __future__ import annotations

import contextlib
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()
PER_BATCH_HOOKS = tuple(
    f"on_{stage}_batch_{when}" for stage in ("train", "validation", "test", "predict") for when in ("start", "end")
) + ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")


class LightningOverheadCuts(PassThroughProfiler):
    """Profiles nothing with one shared context, and for the length of a run hides the per-batch hooks the callbacks
    inherit without implementing. Lightning hands a profiler the model (`_lightning_module`) just before `setup`; the
    hooks come back in `teardown` after a run that ends, and in `on_exception` (of a helper callback) otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._silenced: list[tuple[Callback, str]] = []
        self._undo_callback = _UndoOnException(self)
        self._callbacks: list[Callback] = []  # the trainer's list, which holds `_undo_callback` during a run

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING

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
    """Lightning tears a profiler down only after a run that ends normally; after one that raises it calls the
    callbacks' `on_exception`."""

    def __init__(self, cuts: LightningOverheadCuts) -> None:
        self.cuts = cuts

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.cuts._undo()
