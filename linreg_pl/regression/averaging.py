"""Tail weight averaging for the regression example: SGD's iterates averaged over the last part of training.

python -m linreg_pl fit --config configs/averaged.yaml
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import AveragedModel
from typing_extensions import override

from linreg_pl.errors import ConfigError


class TailWeightAveraging(WeightAveraging):
    """Lightning's `WeightAveraging` (torch's `AveragedModel`: an equal-weight average of the weights after
    each optimiser step), over the last `1 - start_fraction` of training's steps only.

    Constant-lr SGD ends wherever the minibatch noise leaves it, a few percent above the optimum on noisy
    data; the average of its iterates converges to the optimum (for a quadratic loss the mean of the
    iterates is the optimum). The early steps are left out, so the descent from the initial weights does
    not weigh on the average. Before the window the average follows the live weights, so validation and
    the checkpoints of early epochs see the model as it is.

    As in `WeightAveraging`: validation runs with the averaged weights, checkpoints hold them in
    `state_dict` (the live ones under `current_model_state`, for resuming exactly), and at the end of
    `fit` they replace the live weights, so the report, `last.ckpt`, `test` and `predict` all use them.

    Args:
        start_fraction: the share of training's steps (`trainer.estimated_stepping_batches`) to run
            before averaging starts, in [0, 1).
    """

    def __init__(self, start_fraction: float = 0.5) -> None:
        if not (isinstance(start_fraction, (int, float)) and 0 <= start_fraction < 1):
            raise ConfigError(f"TailWeightAveraging: start_fraction must be in [0, 1), got {start_fraction!r}")
        super().__init__()
        self.start_fraction = start_fraction
        self._start_step = 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning copies the model here, before the precision plugin converts it: under 64-true the copy would
        # stay float32, and every swap with it (validation, checkpoints) would round the live model's weights and
        # fixed layers to float32 (on an ill-conditioned table, enough to make SGD diverge)
        super().setup(trainer, pl_module, stage)
        if self._average_model is not None and str(trainer.precision).startswith("64"):
            self._average_model.double()

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The model's fixed layers (statistics, whitening) are built again after the copy: in its own `setup`, in
        # the precision it trains in, and by a checkpoint of an earlier layout (`on_load_checkpoint`). The average
        # takes them as they are (they are not trained, so not averaged); when a layer came or went, the model is
        # copied again, keeping the averaged parameters.
        if self._average_model is None:
            return
        average = self._average_model.module
        shapes = {name: buffer.shape for name, buffer in pl_module.named_buffers()}
        if shapes == {name: buffer.shape for name, buffer in average.named_buffers()}:
            for kept, current in zip(average.buffers(), pl_module.buffers(), strict=True):
                kept.data.copy_(current.data)
            return
        parameters = [parameter.detach().clone() for parameter in average.parameters()]
        averaged = self._average_model.n_averaged.clone()
        device = self._device or pl_module.device
        self._average_model = AveragedModel(
            model=pl_module, device=device, use_buffers=self._use_buffers, **self._kwargs
        )
        for new, old in zip(self._average_model.module.parameters(), parameters, strict=True):
            new.data.copy_(old)
        self._average_model.n_averaged.copy_(averaged)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_step = int(self.start_fraction * trainer.estimated_stepping_batches)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._average_model is not None and trainer.global_step <= self._start_step:
            self._average_model.n_averaged.zero_()  # AveragedModel copies the weights when it has none averaged
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # outside `fit` there is nothing to restore: the checkpoint's `state_dict` already is the average
        if self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
