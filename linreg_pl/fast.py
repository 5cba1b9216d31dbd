"""A speed-up for small models that reaches into Lightning's internals, on by `trainer.profiler:
linreg_pl.fast.LightningOverheadCuts` in `linreg_pl/base.yaml`. To remove it: delete this file and that line.

Lightning wraps ~40 hook calls a step in `trainer.profiler.profile(name)`, and its `PassThroughProfiler` builds a
context manager for each. Measured, with two cuts tried and dropped because they changed users' objects (a class swap,
hidden callback hooks), by `python benchmarks/throughput.py --sections cuts` (docs/speed.md)."""

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()


class LightningOverheadCuts(PassThroughProfiler):
    """Profiles nothing, with one shared context instead of a new one for each of Lightning's hook calls."""

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING
