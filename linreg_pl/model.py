"""The LightningModule: `nn.Linear` with MSE loss, a configurable optimiser and torchmetrics.

    python -m linreg_pl fit --config configs/default.yaml

It runs in any `Trainer` on its own: the optimiser (SGD, lr 0.03 by default) and the metrics live
here, not in the CLI. Feature/target standardisation statistics, when the data module provides them,
are buffers of the module, so a checkpoint predicts from raw features in the original units.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score
from typing_extensions import override

from linreg_pl.errors import ConfigError


class LinearRegression(LightningModule):
    """Linear regression y = x·w + b trained by minimising the mean squared error.

    Args:
        num_inputs: number of features (the CLI links it from the data module).
        init_std: the weight starts from N(0, init_std²); the bias starts at 0.
        optimizer: any `torch.optim` optimiser, by class path with its arguments.
        scheduler: an optional learning-rate scheduler, by class path; stepped once per epoch.
    """

    def __init__(
        self,
        num_inputs: int = 2,
        init_std: float = 0.01,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.03),
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # the optimiser and scheduler are callables: the CLI's saved config.yaml records them instead
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if not isinstance(num_inputs, int) or num_inputs < 1:
            raise ConfigError(f"LinearRegression: num_inputs must be an integer >= 1, got {num_inputs!r}")
        self.optimizer = optimizer
        self.scheduler = scheduler
        # the arguments themselves, not self.hparams: a subclass with other init arguments saves those
        self.net = nn.Linear(num_inputs, 1)
        nn.init.normal_(self.net.weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.net.bias)
        # identity until `set_standardization`; saved with the weights
        self.register_buffer("feature_mean", torch.zeros(num_inputs))
        self.register_buffer("feature_scale", torch.ones(num_inputs))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))
        self._standardized = False
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_standardized())
        # The epoch's training loss, summed on the device without a host sync (see `_shared_step`). Not a
        # buffer: DDP would overwrite every process's buffers with rank 0's before each step. A dict,
        # mutated in place, so the hot path assigns no module attribute.
        self._epoch_train: dict[str, Any] = {"loss_sum": None, "examples": 0}
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @override
    def forward(self, features: Tensor) -> Tensor:
        """Predictions in the targets' original units for raw features [n, num_inputs] -> [n]."""
        predictions = self._standardized_predictions(features)
        if self._standardized:
            predictions = predictions * self.target_scale + self.target_mean
        return predictions

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @override
    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self(batch[0])

    @override
    def configure_optimizers(self) -> Any:
        try:
            optimizer = self.optimizer(self.parameters())
        except ValueError as error:  # torch's own check, e.g. "Invalid learning rate: -1"
            raise ConfigError(f"model.optimizer: {error}") from None
        for group in optimizer.param_groups:
            lr = float(group["lr"])
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(f"model.optimizer: the learning rate must be a finite number > 0, got {lr}")
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch_train.update(loss_sum=None, examples=0)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Logged at the epoch's last batch rather than in `on_train_epoch_end`, which runs after the
        # callbacks' own epoch-end hooks: ParameterReport's epoch line would show the previous epoch.
        if self.trainer.is_last_batch:
            # mean over the epoch's examples; under DDP, the mean of the processes' equal-sized shares
            totals = self._epoch_train
            if totals["loss_sum"] is not None:
                mean = totals["loss_sum"] / totals["examples"]
                self.log("train/loss", mean, on_step=False, on_epoch=True, sync_dist=True)

    @override
    def setup(self, stage: str) -> None:
        # A data module that standardises (file data) hands its training-split statistics over here.
        datamodule = getattr(self.trainer, "datamodule", None)
        statistics = getattr(datamodule, "standardization", None)
        if stage == "fit" and statistics is not None:
            self.set_standardization(**statistics)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the running hook in `_current_fx_name` around every hook call, ~44 times a
        # step; nn.Module's generic __setattr__ (which looks for parameters, buffers and submodules of
        # that name) then costs about as much as the whole step of a small model. It is a plain string.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def set_standardization(
        self, feature_mean: Tensor, feature_scale: Tensor, target_mean: Tensor, target_scale: Tensor
    ) -> None:
        """Use these statistics: features are standardised on the way in, targets un-standardised out."""
        for name, value in (
            ("feature_mean", feature_mean),
            ("feature_scale", feature_scale),
            ("target_mean", target_mean),
            ("target_scale", target_scale),
        ):
            getattr(self, name).copy_(value)
        self._refresh_standardized()

    def learned_parameters(self) -> tuple[Tensor, Tensor]:
        """The weight [num_inputs] and bias [] that map raw features to targets in original units."""
        with torch.no_grad():
            weight, bias = self._effective_weight_bias()
            weight, bias = weight[0], bias[0]
            if self._standardized:
                weight, bias = weight * self.target_scale, bias * self.target_scale + self.target_mean
        return weight.detach().cpu(), bias.detach().cpu()

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        features, targets = batch[0], batch[1]
        predictions = self._standardized_predictions(features)
        if self._standardized:
            loss = F.mse_loss(predictions, (targets - self.target_mean) / self.target_scale)
            predictions = predictions * self.target_scale + self.target_mean
        else:
            loss = F.mse_loss(predictions, targets)
        if stage == "train":
            # Not `self.log` per step: it costs more than the whole step of a small model (Lightning moves
            # its result buffers to the device on every call), and the epoch mean is what is reported.
            totals = self._epoch_train
            if totals["loss_sum"] is None:
                totals["loss_sum"] = torch.zeros((), device=loss.device)
            totals["loss_sum"].add_(loss.detach(), alpha=len(targets))
            totals["examples"] += len(targets)
            return loss
        # An epoch mean weighted by batch size; synced across processes once, at the end of the epoch.
        # The loss is in standardised units when standardising; `mse` is always in the targets' units.
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(targets), sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(predictions, targets)
        self.log_dict(metrics)
        return loss

    def _standardized_predictions(self, features: Tensor) -> Tensor:
        if not self._standardized:
            return self.net(features).squeeze(-1)
        weight, bias = self._effective_weight_bias()
        return F.linear(features, weight, bias).squeeze(-1)

    def _effective_weight_bias(self) -> tuple[Tensor, Tensor]:
        # Standardising x before the layer equals a layer with w / scale and b - (w / scale)·mean on raw
        # x: O(num_inputs) work per step instead of two passes over the whole batch.
        if not self._standardized:
            return self.net.weight, self.net.bias
        weight = self.net.weight / self.feature_scale
        return weight, self.net.bias - weight @ self.feature_mean

    def _refresh_standardized(self) -> None:
        self._standardized = not (
            bool((self.feature_mean == 0).all())
            and bool((self.feature_scale == 1).all())
            and float(self.target_mean) == 0
            and float(self.target_scale) == 1
        )
