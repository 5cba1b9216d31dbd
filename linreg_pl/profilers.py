"""A no-op profiler without per-call cost: Lightning's fixed per-step overhead, trimmed for tiny models.

    python -m linreg_pl fit --trainer.profiler simple      # a real profiler, when you want one

Lightning wraps every hook call in `with trainer.profiler.profile(name):`, about 40 times a step.
Its default `PassThroughProfiler` builds a fresh generator-based context manager each time (~1 µs
apiece), a sizeable share of a step that itself takes ~70 µs in a plain PyTorch loop.
"""

from __future__ import annotations

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler
from typing_extensions import override

_NOTHING = contextlib.nullcontext()


class NoOpProfiler(PassThroughProfiler):
    """Profiles nothing, and hands out one shared do-nothing context instead of making one per call."""

    @override
    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING
