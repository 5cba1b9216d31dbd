"""A speed-up for small models that reaches into Lightning's internals; `linreg_pl/base.yaml` turns it on with
`trainer.profiler: linreg_pl.fast.LightningOverheadCuts`. To remove it: delete this file and that line.

A step of the default experiment is a few microseconds of arithmetic; the rest is Lightning's bookkeeping. Lightning
wraps ~40 hook calls a step in `trainer.profiler.profile(name)`, and its default `PassThroughProfiler` builds a context
manager for each; here one shared do-nothing context serves them all. Measured, with the cuts tried and dropped (they
changed users' objects: a class swap broke pickling the module, hiding callbacks' unused hooks altered callbacks during
a run), by `python benchmarks/throughput.py --sections cuts` (figures in docs/speed.md).
"""

from __future__ import annotations

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()


class LightningOverheadCuts(PassThroughProfiler):
    """Profiles nothing, with one shared context instead of a new one for each of Lightning's hook calls."""

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING
