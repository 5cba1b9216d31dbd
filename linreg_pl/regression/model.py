"""The LightningModule: `Standardize` and `nn.Linear` trained by minimising the mean squared error.

    python -m linreg_pl fit --config configs/default.yaml

The network is plain `nn.Module`s; the `LightningModule` around it is the system: loss, optimiser,
metrics. It runs in any `Trainer` on its own:

    model = LinearRegression(num_inputs=2, optimizer=lambda params: torch.optim.SGD(params, lr=0.03))
    Trainer(max_epochs=3).fit(model, SyntheticRegressionDataModule(...))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score
from typing_extensions import override

from linreg_pl.errors import ConfigError

# The layout of LinearRegression's checkpoints, saved in each as `checkpoint[FORMAT_KEY]`:
#   1 (no key; before the Standardize layers): `net.weight`, `net.bias`, `feature_mean`, `feature_scale`,
#     `target_mean` [], `target_scale` []; identity statistics (mean 0, scale 1) meant "not standardised"
#   2: `standardize.{mean,scale}`, `linear.{weight,bias}`, `target.{mean,scale}` [1]; statistics only when
#     standardising, and then also in the hyperparameters' `standardization`
# A new layout adds a number and a step in `migrate_checkpoint`.
FORMAT_KEY = "linreg_pl_format"
FORMAT = 2


class Standardize(nn.Module):
    """`(x - mean) / scale` with fixed statistics, saved with the weights; `inverse` maps back.

    Without statistics it is the identity and stores nothing.

    Args:
        mean: one value per feature, or None.
        scale: one value per feature (> 0), or None.
    """

    def __init__(self, mean: Sequence[float] | None = None, scale: Sequence[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", None if scale is None else torch.tensor(scale, dtype=torch.float32))

    @override
    def forward(self, values: Tensor) -> Tensor:
        return values if self.mean is None else (values - self.mean) / self.scale

    def inverse(self, values: Tensor) -> Tensor:
        return values if self.mean is None else values * self.scale + self.mean


class LinearRegression(LightningModule):
    """Linear regression `y = x·w + b`, trained on standardised features and target when given statistics.

    It minimises `mean squared error + l2_strength·||w||² + l1_strength·||w||₁`, the bias never penalised.
    With standardisation the penalty is on the weight of the standardised problem (`self.linear.weight`,
    with the error in standardised target units): `NormalEquations.solve(l1, l2, standardize=True)` is its
    exact optimum; without statistics, `standardize=False`. The L2 term is added to the training loss; the
    L1 term is a proximal step, soft-thresholding the weight by lr·l1_strength after every optimiser step
    (lr read from the optimiser, so schedulers apply), which sets irrelevant weights to exactly 0.
    `train/loss` is the mean squared error alone, as `val/loss` is, so the two stay comparable.

    Args:
        num_inputs: number of features (the CLI links it from the data module).
        init_std: the weight starts from N(0, init_std²), >= 0; the bias starts at 0.
        l2_strength: weight of the squared L2 (ridge) penalty on the weight, >= 0; 0 is off.
        l1_strength: weight of the L1 (lasso) penalty on the weight, >= 0; 0 is off. Both > 0: elastic net.
        optimizer: any `torch.optim` optimiser, by class path with its arguments; torch's own
            defaults apply to what is not given (the experiment's lr lives in `configs/default.yaml`).
        scheduler: an optional learning-rate scheduler, by class path; stepped once per epoch.
        standardization: training-split statistics `{"feature_mean": [...], "feature_scale": [...],
            "target_mean": [m], "target_scale": [s]}` (the CLI links them from the data module), or None
            to train on raw values. With them the model still takes raw features and predicts in the
            target's original units: `Standardize` layers are part of the network and of its checkpoint.
        feature_names: the name of each input column, in input order (the CLI links them from a table's
            data module), or None; kept in the checkpoint so an exported model says what it takes.
        encoding: each table column, in input order, with its levels (a text column: indicator columns for
            all but the first) or None (a number column), linked from a table's data module; kept in the
            checkpoint so that validate, test and predict encode new tables as in training.
    """

    def __init__(
        self,
        num_inputs: int = 2,
        init_std: float = 0.01,
        l2_strength: float = 0.0,
        l1_strength: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
        standardization: dict[str, list[float]] | None = None,
        feature_names: list[str] | None = None,
        encoding: dict[str, list[str] | None] | None = None,
    ) -> None:
        super().__init__()
        # the optimiser and scheduler are callables: the CLI's saved config.yaml records them instead
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if not isinstance(num_inputs, int) or num_inputs < 1:
            raise ConfigError(f"LinearRegression: num_inputs must be an integer >= 1, got {num_inputs!r}")
        if not (math.isfinite(init_std) and init_std >= 0):
            raise ConfigError(f"LinearRegression: init_std must be a finite number >= 0, got {init_std!r}")
        if feature_names is not None and len(feature_names) != num_inputs:
            raise ConfigError(
                f"LinearRegression: {len(feature_names)} feature_names for num_inputs {num_inputs}; give one per input"
            )
        for name, value in (("l2_strength", l2_strength), ("l1_strength", l1_strength)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"LinearRegression: {name} must be a finite number >= 0 (0 is off), got {value!r}")
        self.optimizer = optimizer
        self.scheduler = scheduler
        # attributes, not only hparams: a subclass's own save_hyperparameters() records its own arguments
        self.l2_strength, self.l1_strength = float(l2_strength), float(l1_strength)
        statistics = standardization or {}
        self.standardize = Standardize(statistics.get("feature_mean"), statistics.get("feature_scale"))
        self.linear = nn.Linear(num_inputs, 1)
        self.target = Standardize(statistics.get("target_mean"), statistics.get("target_scale"))
        nn.init.normal_(self.linear.weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.linear.bias)
        # Lightning's own attribute for an input batch: `export` traces with it (and the model summary shows
        # input and output sizes)
        self.example_input_array = torch.zeros(2, num_inputs)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @override
    def forward(self, features: Tensor) -> Tensor:
        """Predictions in the target's original units for raw features [n, num_inputs] -> [n]."""
        return self.target.inverse(self._standardized_predictions(features))

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
    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        # The L1 proximal step belongs right after the update it follows, and `optimizer_step` is the hook
        # that wraps exactly that update. `on_before_zero_grad` would not do: Lightning zeroes the gradients
        # inside the closure, before `optimizer.step` updates the weights, so the last update would go
        # unthresholded.
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        l1 = self.l1_strength
        if l1:
            with torch.no_grad():
                lr = next(g["lr"] for g in optimizer.param_groups if any(p is self.linear.weight for p in g["params"]))
                self.linear.weight.copy_(F.softshrink(self.linear.weight, float(lr) * l1))

    @override
    def on_train_start(self) -> None:
        self.on_train_epoch_start()  # a run resumed mid-epoch starts without on_train_epoch_start

    @override
    def on_train_epoch_start(self) -> None:
        # The epoch's training loss, summed on the device. Not `self.log` (nor a torchmetrics
        # `MeanMetric`) in every step: either costs more than the whole step of this model (measured
        # +100-150% per step on CPU), and the epoch mean is what is reported.
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_examples = 0

    @override
    def on_train_epoch_end(self) -> None:
        if self._train_examples:
            # under DDP, the mean of the processes' means: exact, since training shares are equal
            mean = self._train_loss_sum / self._train_examples
            self.log("train/loss", mean, on_step=False, on_epoch=True, sync_dist=True)

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FORMAT_KEY] = FORMAT

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Bring a checkpoint of an earlier layout up to date, then take its statistics: the weights
        were trained with them, whatever the data module at hand computes (or not)."""
        migrate_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for name in ("standardize", "target"):
            mean, scale = state.get(f"{name}.mean"), state.get(f"{name}.scale")
            if (mean is None) != (getattr(self, name).mean is None):
                setattr(
                    self,
                    name,
                    Standardize(None if mean is None else mean.tolist(), None if scale is None else scale.tolist()).to(
                        self.device
                    ),
                )
        if "standardization" in checkpoint.get("hyper_parameters", {}):  # re-saved, it rebuilds the same layers
            self.hparams["standardization"] = checkpoint["hyper_parameters"]["standardization"]

    def learned_parameters(self) -> tuple[Tensor, Tensor]:
        """The weight [num_inputs] and bias [] that map raw features to targets in original units."""
        with torch.no_grad():
            weight, bias = self.linear.weight[0], self.linear.bias[0]
            if self.standardize.mean is not None:
                weight = weight / self.standardize.scale
                bias = bias - weight @ self.standardize.mean
            if self.target.mean is not None:
                weight, bias = weight * self.target.scale, self.target.inverse(bias.reshape(1))[0]
        return weight.detach().cpu(), bias.detach().cpu()

    def _standardized_predictions(self, features: Tensor) -> Tensor:
        return self.linear(self.standardize(features)).squeeze(-1)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        features, targets = batch[0], batch[1]
        predictions = self._standardized_predictions(features)
        # in standardised units when standardising: a target 1000 units wide trains at the same lr
        loss = F.mse_loss(predictions, self.target(targets))
        if stage == "train":
            self._train_loss_sum.add_(loss.detach(), alpha=len(targets))
            self._train_examples += len(targets)
            if self.l2_strength:  # with 0, the graph is the MSE's alone: the seed run's bits
                return loss + self.l2_strength * self.linear.weight.pow(2).sum()
            return loss
        # An epoch mean weighted by batch size, synced across processes once, at the end of the epoch;
        # the metrics compare predictions and targets in the target's original units.
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(targets), sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self.target.inverse(predictions), targets)
        self.log_dict(metrics)
        return loss


def migrate_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Update a `LinearRegression` checkpoint of an earlier layout (see `FORMAT`) in place; returns it."""
    if checkpoint.get(FORMAT_KEY, 1) < 2 and "net.weight" in checkpoint["state_dict"]:
        old = checkpoint["state_dict"]
        state = {"linear.weight": old.pop("net.weight"), "linear.bias": old.pop("net.bias")}
        hparams = checkpoint.setdefault("hyper_parameters", {})
        statistics = {}
        for name, key in (("standardize", "feature"), ("target", "target")):
            mean, scale = old.pop(f"{key}_mean").reshape(-1), old.pop(f"{key}_scale").reshape(-1)
            if bool((mean != 0).any() or (scale != 1).any()):  # identity statistics: not standardised
                state[f"{name}.mean"], state[f"{name}.scale"] = mean, scale
                statistics.update({f"{key}_mean": mean.tolist(), f"{key}_scale": scale.tolist()})
        hparams["standardization"] = statistics or None
        checkpoint["state_dict"] = {**old, **state}  # whatever else it held, e.g. metric states
    checkpoint[FORMAT_KEY] = FORMAT
    return checkpoint
