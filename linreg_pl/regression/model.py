"""The LightningModule: `Standardize` and `nn.Linear` trained by minimising the mean squared error.

    python -m linreg_pl fit --config configs/default.yaml

The network is plain `nn.Module`s; the `LightningModule` around it is the system: loss, optimiser,
metrics. It runs in any `Trainer` on its own:

    model = LinearRegression(num_inputs=2, optimizer=lambda params: torch.optim.SGD(params, lr=0.03))
    Trainer(max_epochs=3).fit(model, SyntheticRegressionDataModule(...))
"""

from __future__ import annotations

import functools
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
from linreg_pl.regression.inference import independent_columns

# The layout of LinearRegression's checkpoints, saved in each as `checkpoint[FORMAT_KEY]`:
#   1 (no key; before the Standardize layers): `net.weight`, `net.bias`, `feature_mean`, `feature_scale`,
#     `target_mean` [], `target_scale` []; identity statistics (mean 0, scale 1) meant "not standardised"
#   2: `standardize.{mean,scale}`, `linear.{weight,bias}`, `target.{mean,scale}` [1]; statistics only when
#     standardising, and then also in the hyperparameters' `standardization`
#   3: also `whiten.matrix` [d, d] when SGD is preconditioned (the statistics' `factor`), and no `linear.bias`
#     when the hyperparameter `bias` is false; a layout-2 checkpoint is a layout-3 one without them
# A new layout adds a number and a step in `migrate_checkpoint`.
FORMAT_KEY = "linreg_pl_format"
FORMAT = 3
# A lasso checkpoint's `state_dict` holds the finished weights (`_lasso_step`), which test, predict and export use;
# without a `WeightAveraging` (which keeps them under `current_model_state`) the live weight a resumed fit continues
# from is kept under this key
LASSO_LIVE_WEIGHT = "linreg_pl_lasso_live_weight"
# With a ridge term, the preconditioner is that of the ridge problem with l2 + this (on the standardised weight). It
# changes the steps' shape only, never the objective. Without one, aliased columns are left out instead.
_DAMPING = 1e-14


class Standardize(nn.Module):
    """`(x - mean) / scale` with fixed statistics, saved with the weights; `inverse` maps back.

    Without statistics it is the identity and stores nothing.

    Args:
        mean: one value per feature, or None.
        scale: one value per feature (> 0), or None.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=dtype))
        self.register_buffer("scale", None if scale is None else torch.tensor(scale, dtype=dtype))

    @override
    def forward(self, values: Tensor) -> Tensor:
        return values if self.mean is None else (values - self.mean) / self.scale

    def inverse(self, values: Tensor) -> Tensor:
        return values if self.mean is None else values * self.scale + self.mean


class Whiten(nn.Module):
    """Maps the weight SGD trains, v, to the weight of the standardised features, w = M·v, with a fixed matrix M
    [d, d] saved with the weights; without one it is the identity and stores nothing.

    z·(M·v) = (z·M)·v: training v is training a linear layer on whitened features z·M. With M = T⁻¹ for
    TᵀT = the features' second moment (T from the QR factor R of the design), z·M has the identity matrix as its
    second moment, so every direction of the loss converges at the same rate, however correlated the columns. M
    is applied to the weight, d² numbers a step, not to the batch (n·d²): the same gradients, far cheaper.

    Args:
        matrix: M [d, d], or None.
    """

    def __init__(self, matrix: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    @override
    def forward(self, weight: Tensor) -> Tensor:
        """The weight [1, d] of the standardised features for the trained weight [1, d]."""
        return weight if self.matrix is None else weight @ self.matrix.T


class LinearRegression(LightningModule):
    """Linear regression `y = x·w + b`, trained on standardised features and target when given statistics.

    It minimises `mean squared error + l2_strength·||w||² + l1_strength·||w||₁`, the bias never penalised.
    With standardisation the penalty is on the weight of the standardised problem (`self.linear.weight`,
    with the error in standardised target units): `NormalEquations.solve(l1, l2, standardize=True)` is its
    exact optimum; without statistics, `standardize=False`. The L2 term is added to the training loss; the
    L1 term is a proximal step, soft-thresholding the weight by lr·l1_strength after every optimiser step
    (lr read from the optimiser, so schedulers apply), which sets irrelevant weights to exactly 0.
    `train/loss` is the mean squared error alone, as `val/loss` is, so the two stay comparable.

    When the statistics hold the design's QR factor (`factor`, tables) and there is no L1 term, SGD is
    preconditioned: it trains the weight of whitened features (`Whiten`, from the factor of the standardised
    features with the ridge term folded in), so correlated columns converge as fast as independent ones; the
    optimiser is unchanged and the model still maps raw features to raw-unit predictions. With an L1 term the
    proximal step needs the penalty's own coordinates, so it is not preconditioned; the weights it ends with
    (an average of iterates under `TailWeightAveraging`, which is never exactly sparse, or the last iterate, whose
    minibatch noise can leave an unused weight off 0) are finished by one exact proximal-gradient step of the
    lasso from the statistics' factor (see `_lasso_step`), at the end of `fit` and in every checkpoint.

    Under `--trainer.precision 64-true` the fixed layers are rebuilt in float64 from the statistics in `setup`
    (Lightning's precision plugin would only widen their float32 values).

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
            to train on raw values; a table's `factor` (the QR factor of its design) with them preconditions SGD,
            and alone (data not standardised) only finishes a lasso (`_lasso_step`). With them the
            model still takes raw features and predicts in the target's original units: `Standardize` layers
            are part of the network and of its checkpoint.
        feature_names: the name of each input column, in input order (the CLI links them from a table's
            data module), or None; kept in the checkpoint so an exported model says what it takes.
        encoding: each table column, in input order, with its levels (a text column: indicator columns for
            all but the first) or None (a number column), linked from a table's data module; kept in the
            checkpoint so that validate, test and predict encode new tables as in training.
        bias: fit the intercept b; False fits y = x·w. Standardising then only scales features and target
            (no centring, which would need a bias), so y = x·w stays exact in the standardised units.
    """

    def __init__(
        self,
        num_inputs: int = 2,
        init_std: float = 0.01,
        l2_strength: float = 0.0,
        l1_strength: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
        standardization: dict[str, list[float] | list[list[float]]] | None = None,
        feature_names: list[str] | None = None,
        encoding: dict[str, list[str] | None] | None = None,
        bias: bool = True,
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
        self._statistics = standardization
        self.linear = nn.Linear(num_inputs, 1, bias=bias)
        self._build_fixed_layers(torch.float32)
        nn.init.normal_(self.linear.weight, mean=0.0, std=init_std)
        if bias:
            nn.init.zeros_(self.linear.bias)
        # Lightning's own attribute for an input batch: `export` traces with it (and the model summary shows
        # input and output sizes)
        self.example_input_array = torch.zeros(2, num_inputs)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def _build_fixed_layers(self, dtype: torch.dtype) -> None:
        """`standardize`, `whiten` and `target` from the hyperparameters' statistics, in `dtype`."""
        statistics = self._statistics or {}
        intercept = self.linear.bias is not None
        means = {}
        for key in ("feature_mean", "target_mean"):
            mean = statistics.get(key)
            # without an intercept only scaling keeps y = x·w exact: the means are taken as 0
            means[key] = mean if mean is None or intercept else [0.0] * len(mean)
        self.standardize = Standardize(means["feature_mean"], statistics.get("feature_scale"), dtype)
        matrix = None
        if (
            statistics.get("factor") is not None
            and statistics.get("feature_scale") is not None
            and not self.l1_strength
        ):
            matrix = whitening(statistics, intercept, self.l2_strength).to(dtype)
        self.whiten = Whiten(matrix)
        self.target = Standardize(means["target_mean"], statistics.get("target_scale"), dtype)

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
        # each row's dot product on its own (elementwise products summed over the features), not `forward`'s
        # matrix product: a BLAS gemm picks its kernel, and so the rounding of a row, by the batch's shape (MKL
        # gives ~1 row in 700 a different float32 last bit in batches of 90 than in 512), and a row's prediction
        # must not depend on the batch it came in (streamed and in-memory predict write the same file)
        features = self.standardize(batch[0])
        weight = self.whiten(self.linear.weight)[0]
        predictions = (features * weight).sum(-1)
        if self.linear.bias is not None:
            predictions = predictions + self.linear.bias
        return self.target.inverse(predictions)

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
    def setup(self, stage: str) -> None:
        if str(self.trainer.precision).startswith("64") and self._statistics:
            self._build_fixed_layers(torch.float64)  # exact statistics, not widened float32 ones

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
    def on_train_end(self) -> None:
        # after the callbacks' on_train_end: a `WeightAveraging` has put the average in place by now
        if self._finishes_lasso():
            with torch.no_grad():
                self.linear.weight.copy_(self._lasso_step(self.linear.weight))

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FORMAT_KEY] = FORMAT
        # `state_dict` gets the finished lasso (what test, predict and export use); the live weights a resumed run
        # continues from stay untouched: a `WeightAveraging` keeps them under `current_model_state`, else we do
        if self._finishes_lasso():
            state = checkpoint["state_dict"]
            if "current_model_state" not in checkpoint:
                checkpoint[LASSO_LIVE_WEIGHT] = state["linear.weight"].detach().clone()
            state["linear.weight"] = self._lasso_step(state["linear.weight"])

    def __getstate__(self) -> dict[str, Any]:
        # the optimiser and scheduler callables LightningCLI builds (jsonargparse's partials) hold the CLI itself,
        # which does not pickle: the module pickles with what they call instead, the class and its arguments
        state = super().__getstate__()
        for name in ("optimizer", "scheduler"):
            made = state.get(name)
            if isinstance(made, functools.partial) and made.args and isinstance(made.args[-1], type):
                state[name] = functools.partial(made.args[-1], **made.keywords)
        return state

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Bring a checkpoint of an earlier layout up to date, then take its statistics: the weights
        were trained with them, whatever the data module at hand computes (or not)."""
        migrate_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        live = checkpoint.get(LASSO_LIVE_WEIGHT)
        if live is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            state["linear.weight"] = live  # resuming: from the live weight, not the finished one
        for name in ("standardize", "target"):
            mean, scale = state.get(f"{name}.mean"), state.get(f"{name}.scale")
            if (mean is None) != (getattr(self, name).mean is None):
                setattr(
                    self,
                    name,
                    Standardize(
                        None if mean is None else mean.tolist(),
                        None if scale is None else scale.tolist(),
                        torch.float32 if mean is None else mean.dtype,
                    ).to(self.device),
                )
        matrix = state.get("whiten.matrix")
        if matrix is None and self.whiten.matrix is not None:
            # trained without preconditioning (an earlier layout): the identity keeps this model's layers, which
            # callbacks may hold copies of by now (WeightAveraging), and computes what the checkpoint's weights did
            state["whiten.matrix"] = torch.eye(len(self.whiten.matrix), dtype=self.whiten.matrix.dtype)
        elif matrix is not None and self.whiten.matrix is None:
            self.whiten = Whiten(matrix).to(self.device)
        if "standardization" in checkpoint.get("hyper_parameters", {}):  # re-saved, it rebuilds the same layers
            self.hparams["standardization"] = checkpoint["hyper_parameters"]["standardization"]
            self._statistics = self.hparams["standardization"]

    def learned_parameters(self) -> tuple[Tensor, Tensor]:
        """The weight [num_inputs] and bias [] (0 without one) that map raw features to targets in original
        units, in float64: folding the layers in float32 would round away what an ill-conditioned design needs."""
        with torch.no_grad():
            bias = self.linear.bias[0] if self.linear.bias is not None else None
            return self._raw_parameters(self.linear.weight[0].double(), None if bias is None else bias.double())

    def nearest_parameters(self, weight: Tensor, bias: Tensor | float) -> tuple[Tensor, Tensor]:
        """The raw-unit (weight, bias) the model comes closest to holding for the given ones: mapped into its own
        parameters (`linear`, behind the fixed layers), rounded to their dtype, and mapped back as
        `learned_parameters` does. In float32 an ill-conditioned table's optimum may be out of reach."""
        with torch.no_grad():
            weight = torch.as_tensor(weight, dtype=torch.float64).cpu()
            bias = torch.as_tensor(bias, dtype=torch.float64).cpu()
            if self.target.mean is not None:
                scale, mean = self.target.scale.double().cpu()[0], self.target.mean.double().cpu()[0]
                weight, bias = weight / scale, (bias - mean) / scale
            if self.standardize.mean is not None:
                bias = bias + weight @ self.standardize.mean.double().cpu()
                weight = weight * self.standardize.scale.double().cpu()
            if self.whiten.matrix is not None:
                matrix = self.whiten.matrix.double().cpu()
                kept = torch.nonzero(matrix.abs().sum(dim=1) > 0).flatten()  # aliased columns: zero rows and columns
                held = torch.zeros_like(weight)
                held[kept] = torch.linalg.solve(matrix[kept][:, kept], weight[kept])
                weight = held
            dtype = self.linear.weight.dtype
            held_bias = bias.to(dtype).double() if self.linear.bias is not None else None
            return self._raw_parameters(weight.to(dtype).double(), held_bias)

    def _raw_parameters(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """`linear`'s weight [d] and bias [] (None without one), float64, through the fixed layers to raw units."""
        device = weight.device
        if self.whiten.matrix is not None:
            weight = self.whiten.matrix.double().to(device) @ weight
        bias = bias if bias is not None else weight.new_zeros(())
        if self.standardize.mean is not None:
            weight = weight / self.standardize.scale.double().to(device)
            bias = bias - weight @ self.standardize.mean.double().to(device)
        if self.target.mean is not None:
            scale, mean = self.target.scale.double().to(device)[0], self.target.mean.double().to(device)[0]
            weight, bias = weight * scale, bias * scale + mean
        return weight.detach().cpu(), bias.detach().cpu()

    def _standardized_predictions(self, features: Tensor) -> Tensor:
        if self.whiten.matrix is None:  # the seed experiment's graph, bit for bit
            return self.linear(self.standardize(features)).squeeze(-1)
        return F.linear(self.standardize(features), self.whiten(self.linear.weight), self.linear.bias).squeeze(-1)

    def _step_scale(self, rows: int) -> float:
        """1, or less where one training row would make the optimiser's steps overshoot. Whitened, the problem's
        curvature is 1 on average, but a batch of B rows that holds a row of leverage h has a curvature of 2·n·h/B
        along that row's direction, and steps of lr above B/(n·h) grow along it (one mistyped row of leverage 0.85
        among 43,000, lr 0.1, batch 512: 14-fold, the run ended 300 times above the optimum). The loss is scaled
        so that lr·scale <= B/(2·n·h): by the same factor in every batch of a size at a given lr, an lr schedule
        of its own, so the optimum SGD approaches is unchanged. The largest leverage comes with the statistics
        of a table in memory (`largest_leverage`)."""
        statistics = self._statistics or {}
        leverage = (statistics.get("largest_leverage") or [0.0])[0]
        if not leverage or self.whiten.matrix is None or self.linear.bias is None or self._trainer is None:
            return 1.0
        count = float(statistics["factor"][0][0]) ** 2  # R's first entry is √n
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        return min(1.0, rows / (2 * count * leverage * lr)) if lr > 0 else 1.0

    def _finishes_lasso(self) -> bool:
        statistics = self._statistics or {}
        return bool(self.l1_strength) and statistics.get("factor") is not None

    def _lasso_step(self, weight: Tensor) -> Tensor:
        """One proximal-gradient step of the lasso (elastic net) in standardised units from `weight` [1, d]:
        S_{η·l1}(w - η·∇f(w)), f the training MSE plus the L2 term, its gradient exact from the statistics'
        factor and η = 1/L, L the largest curvature of f.

        The lasso optimum is this map's fixed point and the map is non-expansive, so it moves an average of the
        iterates, or the last iterate, no further from the optimum than it was, and sets a weight to exactly 0
        where the optimality condition |∇f_j| <= l1 says so there (an irrelevant feature's weight is noise of
        order the lr, well inside the threshold η·(l1 - |∇f_j|)). Thresholding by lr·l1 instead would zero
        nothing once a schedule has taken the lr to ~0."""
        design, target = standardized_factor(self._statistics, self.linear.bias is not None)
        w = weight.detach().to("cpu", torch.float64).reshape(-1)
        gradient = 2 * design.T @ (design @ w - target) + 2 * self.l2_strength * w
        curvature = 2 * (float(torch.linalg.matrix_norm(design, ord=2)) ** 2 + self.l2_strength)
        step = 1 / curvature
        finished = F.softshrink(w - step * gradient, step * self.l1_strength)
        return finished.reshape(weight.shape).to(weight.device, weight.dtype)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        features, targets = batch[0], batch[1]
        predictions = self._standardized_predictions(features)
        # in standardised units when standardising: a target 1000 units wide trains at the same lr
        loss = F.mse_loss(predictions, self.target(targets))
        if stage == "train":
            self._train_loss_sum.add_(loss.detach(), alpha=len(targets))
            self._train_examples += len(targets)
            if self.l2_strength:  # with 0, the graph is the MSE's alone: the seed run's bits
                loss = loss + self.l2_strength * self.whiten(self.linear.weight).pow(2).sum()
            scale = self._step_scale(len(targets))
            return loss if scale == 1.0 else loss * scale
        # An epoch mean weighted by batch size, synced across processes once, at the end of the epoch;
        # the metrics compare predictions and targets in the target's original units.
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(targets), sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self.target.inverse(predictions), targets)
        self.log_dict(metrics)
        return loss


def standardized_factor(statistics: dict[str, Any], intercept: bool) -> tuple[Tensor, Tensor]:
    """X [k, d] and t [k] in float64 with ||X·w - t||² the training MSE of the standardised problem at its
    weight w (with the best bias, or none), from the statistics' `factor` R of [1, x, y]: R's centred block
    (or, without intercept, the factor of the uncentred [x, y]) scaled by the stds and by 1/√n (|R₀₀| = √n)."""
    factor = torch.tensor(statistics["factor"], dtype=torch.float64)
    root_count = factor[0, 0].abs()
    block = factor[1:, 1:] if intercept else torch.linalg.qr(factor[:, 1:], mode="r").R
    # not standardised (only the factor given): raw units
    scale = torch.tensor(statistics.get("feature_scale") or [1.0] * (factor.shape[1] - 2), dtype=torch.float64)
    target_scale = float((statistics.get("target_scale") or [1.0])[0])
    return block[:, :-1] / (scale * root_count), block[:, -1] / (target_scale * root_count)


def whitening(statistics: dict[str, Any], intercept: bool, l2: float = 0.0) -> Tensor:
    """`Whiten`'s matrix M = T⁻¹ [d, d] in float64, T the triangular factor of XᵀX + (l2 + damping)·I (X from
    `standardized_factor`): the loss in v = T·w has the identity as its curvature (up to the damping).

    Without a ridge term, aliased columns (combinations of the columns before them, to `ALIAS_TOLERANCE`, as R's
    `lm` finds them; more columns than rows leave the last ones aliased) are left out of T and their rows and
    columns of M are 0: the model trains on the identifiable columns and an aliased column's weight is exactly 0
    (R's choice, which the report's optimum makes too), where a damped inverse would let it grow to ~1e7."""
    design, _ = standardized_factor(statistics, intercept)
    size = design.shape[1]
    kept = list(range(size))
    if l2 == 0:  # aliased columns (R's rule, `independent_columns`) get weight 0: M's rows and columns for them are 0
        kept = independent_columns(torch.linalg.qr(design, mode="r").R)
    identity = torch.eye(len(kept), dtype=torch.float64)
    # without a ridge term the kept columns are independent (each keeps at least ALIAS_TOLERANCE of its norm): T is
    # invertible as it is, and a damping would leave the directions of curvature below it unwhitened (Filip's
    # smallest is ~1e-19: SGD stopped at 1.69 x the optimum)
    stacked = torch.cat([design[:, kept], math.sqrt(l2 + _DAMPING) * identity]) if l2 > 0 else design[:, kept]
    factor = torch.linalg.qr(stacked, mode="r").R
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix[torch.tensor(kept).unsqueeze(-1), torch.tensor(kept)] = torch.linalg.solve_triangular(
        factor, identity, upper=True
    )
    return matrix


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
    # 2 -> 3 changes nothing: without `whiten.matrix` a model is not preconditioned, and `linear.bias` is there
    checkpoint[FORMAT_KEY] = FORMAT
    return checkpoint
