"""The guards the CLI adds to every run (keys of `linreg_pl/base.yaml`; `--divergence_guard null` leaves one out)."""

import contextlib
import os
import signal
import threading
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from linreg_pl.checkpoint_io import remove_stale_temporaries
from linreg_pl.errors import ConfigError


class DivergenceError(RuntimeError):
    """The loss or the weights stopped being finite; the message says where and what to try."""


class DivergenceGuard(Callback):
    """Stops training with a `DivergenceError` once the loss or a weight is NaN or infinite, keeping the last good
    checkpoint: it checks on the last batch of each epoch (before the epoch's checkpoint) and every
    `check_every_n_steps` steps (not every step: each check is a device-to-host sync on a GPU).

    Args:
        check_every_n_steps: steps between checks, >= 1.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ConfigError(f"DivergenceGuard: check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx % self.check_every_n_steps and not trainer.is_last_batch:
            return
        # a skipped batch or manual optimisation returns no loss: the weights are checked alone
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        losses = [loss.detach()] if isinstance(loss, torch.Tensor) else []
        # one sum per tensor: NaN and inf propagate into it, and nothing the size of the model is allocated; where a
        # sum overflows (huge finite weights), each value is looked at
        weights = [p.detach() for p in pl_module.parameters()]
        if bool(torch.isfinite(torch.stack([value.sum() for value in [*losses, *weights]])).all()):
            return
        loss_finite = not losses or bool(torch.isfinite(losses[0]).all())
        if loss_finite and all(bool(torch.isfinite(w).all()) for w in weights):
            return
        lrs = ", ".join(sorted({f"{group['lr']:g}" for opt in trainer.optimizers for group in opt.param_groups}))
        kept = f"the last good checkpoint is kept: {last}" if (last := last_checkpoint_path(trainer)) else (
            "no checkpoint was written" + ("" if trainer.checkpoint_callbacks else " (checkpointing is off)")
        )  # fmt: skip
        raise DivergenceError(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"{'the weights' if loss_finite else 'the loss'} became NaN or infinite. The learning rate {lrs} is "
            f"probably too high for this data: lower it; {kept}"
        )


class InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM during training, finishes the step (Lightning stops between steps on SIGTERM; in one
    process the first Ctrl-C is made one), saves `interrupted.ckpt` beside the other checkpoints and exits with status
    130 or 143; a second Ctrl-C stops at once, saving nothing. At the start of `fit` it removes what killed checkpoint
    writes left in this run's and the resumed run's folders."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.stopped_by = signal.SIGTERM  # SIGINT once Ctrl-C was pressed

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.stopped_by = signal.SIGTERM
        # after ModelCheckpoint's setup, which resolves its dirpath; one process deletes, as one writes
        directories = {c.dirpath for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)}
        if trainer.ckpt_path and os.path.isfile(trainer.ckpt_path):
            directories.add(os.path.dirname(os.path.abspath(trainer.ckpt_path)))
        for directory in sorted(directories) if trainer.is_global_zero else ():
            remove_stale_temporaries(directory)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning handles SIGTERM by now, and puts back every handler it found (this one's too) when the run ends;
        # with several processes Ctrl-C is left to Lightning (docs/troubleshooting.md)
        alone = trainer.world_size == 1 and threading.current_thread() is threading.main_thread()
        usual = (
            callable(signal.getsignal(signal.SIGTERM)) and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if alone and usual:
            signal.signal(signal.SIGINT, self._finish_the_step)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if signal.getsignal(signal.SIGINT) == self._finish_the_step:  # training is over: Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _finish_the_step(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C raises KeyboardInterrupt
        self.stopped_by = signal.SIGINT
        with contextlib.suppress(OSError):  # os.write, not print: a signal can land while print holds stderr
            os.write(2, b"\nCtrl-C: stopping after this step (press it again to stop at once, saving nothing)\n")
        signal.raise_signal(signal.SIGTERM)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if isinstance(exception, KeyboardInterrupt):
            last = last_checkpoint_path(trainer)
            hint = f"Resume from the last finished epoch with: fit <same config> --ckpt_path {last}" if last else (
                "No epoch had finished, so there is nothing to resume from."
            )  # fmt: skip
            return self._say(trainer, f"Stopped at once (KeyboardInterrupt): nothing saved. {hint}")
        exception.code = 128 + self.stopped_by  # the exit status, as for a process stopped by that signal
        name = "Ctrl-C" if self.stopped_by == signal.SIGINT else "SIGTERM"
        if not all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()):
            return
        if not trainer.checkpoint_callbacks:
            off = "checkpointing is off (--trainer.enable_checkpointing false), so nothing was saved."
            return self._say(trainer, f"Interrupted ({name}): {off}")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in Lightning's own shutdown: let the save finish
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        folder = dirpath or os.path.join(trainer.log_dir or ".", "checkpoints")
        self.path = os.path.join(folder, "interrupted.ckpt")
        trainer.save_checkpoint(self.path, weights_only=False)  # everything, optimiser and loops too
        loader = trainer.train_dataloader  # None before the first training step: nothing to resume mid-way
        exact = loader is None or (hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"))
        how = "Resume exactly with" if exact else (
            "This data keeps no place in the epoch, so a resumed epoch's remaining steps start from its first "
            "batches. Resume with"
        )  # fmt: skip
        self._say(trainer, f"Interrupted ({name}): saved {self.path}. {how}: fit <same config> --ckpt_path {self.path}")

    @staticmethod
    def _say(trainer: Trainer, message: str) -> None:
        if trainer.is_global_zero:
            print(f"\n{message}", flush=True)


def last_checkpoint_path(trainer: Trainer) -> str:
    """The newest end-of-epoch checkpoint of this run ("" if none yet)."""
    for callback in trainer.checkpoint_callbacks:
        if callback.last_model_path:
            return callback.last_model_path
        if callback.monitor is None and callback.best_model_path:  # an unmonitored one keeps the newest
            return callback.best_model_path
    return ""


class MonitoredMetricsCheck(Callback):
    """Stops with one line at the end of `fit` when a callback (`ModelCheckpoint`, ...) monitored a metric the model
    never logged in the run, naming those it did log: without validation Lightning only warns, and never writes the
    best checkpoint. A metric logged on some epochs only counts; a callback with `strict=False` is left alone."""

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logged: set[str] = set()

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logged.update(trainer.callback_metrics)  # the epoch's validation included

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logged.update(trainer.callback_metrics)
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor not in self._logged and getattr(callback, "strict", True):
                raise ConfigError(
                    f"{type(callback).__name__} monitors {monitor!r}, which {type(pl_module).__name__} never logged; "
                    f"it logged: {', '.join(sorted(self._logged)) or 'nothing'}. Monitor one of those (its `monitor` "
                    "argument in trainer.callbacks), or leave that callback out of the config"
                )
