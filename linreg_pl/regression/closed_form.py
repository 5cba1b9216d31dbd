"""Exact linear-regression answers (least squares, ridge, lasso, elastic net) from one pass over the data.

    from linreg_pl.regression.closed_form import NormalEquations
    statistics = NormalEquations()
    for features, targets in blocks_of_rows:      # in memory or streamed from disk
        statistics.update(features, targets)
    weight, bias = statistics.solve(l1=1e-3, l2=1e-2, standardize=True)

The data are never held: `update` folds each block of rows into float64 means and centred second
moments, and `solve` works on those (d + 1 numbers and a (d + 1)² matrix). They are the yardsticks
for what SGD reaches, and `standardization()` gives the statistics a data module standardises with.

The objective, with the mean squared error (not half of it) and the bias never penalised:

    mean((y - x·w - b)²) + l2·||w||² + l1·||w||₁

In scikit-learn's terms, on n rows with the intercept fitted:

    Ridge(alpha)                  ||y - Xw||² + alpha·||w||²                            -> l2 = alpha / n
    Lasso(alpha)                  1/(2n)·||y - Xw||² + alpha·||w||₁                     -> l1 = 2·alpha
    ElasticNet(alpha, l1_ratio)   1/(2n)·||y - Xw||² + alpha·l1_ratio·||w||₁
                                                     + alpha·(1 - l1_ratio)/2·||w||²    -> l1 = 2·alpha·l1_ratio,
                                                                                           l2 = alpha·(1 - l1_ratio)

(sklearn's objective is ours times n for Ridge and times 1/2 for the other two, so the minimiser is the
same). `solve(..., standardize=True)` matches `make_pipeline(StandardScaler(), estimator)` fitted on the
raw target with the same l2 as above but l1 divided by the target's std (l1 = 2·alpha·l1_ratio / target_std,
population std): our penalty is on the standardised target's scale, the pipeline's on the raw one.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

from linreg_pl.errors import ConfigError

ROWS_AT_ONCE = 65536  # rows folded in per step of `NormalEquations.update`


class NormalEquations:
    """Float64 sufficient statistics of (features, targets) for linear regression, gathered block by block.

    Each block's mean and centred Gram matrix are merged into the running ones with the parallel
    algorithm of Chan, Golub and LeVeque: summing raw squares instead would cancel away the variance of a
    column whose offset is large against its spread (values 10⁴ ± 1 keep only 8 of 16 digits). Columns
    whose values are all equal are tracked exactly (by their minimum and maximum), so they get scale 1
    and weight 0 rather than a variance made of rounding noise.
    """

    def __init__(self) -> None:
        self.count = 0
        # over the joint vector [x, y]: mean, Σ (v - mean)(v - mean)ᵀ, and the range of each column
        self._mean: Tensor | None = None
        self._comoment: Tensor | None = None
        self._low: Tensor | None = None
        self._high: Tensor | None = None

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Adds a block of rows: `features` [n, d], `targets` [n] (or [n, 1]), any float dtype and device."""
        if features.ndim != 2 or targets.reshape(-1).shape[0] != features.shape[0]:
            raise ValueError(
                f"NormalEquations.update: expected features [n, d] and targets [n], "
                f"got {tuple(features.shape)} and {tuple(targets.shape)}"
            )
        if self._mean is not None and features.shape[1] + 1 != len(self._mean):
            raise ValueError(
                f"NormalEquations.update: this block has {features.shape[1]} features, "
                f"the earlier ones had {len(self._mean) - 1}"
            )
        rows = len(features)
        if rows == 0:
            return
        if rows > ROWS_AT_ONCE:  # float64 copies of one slice at a time: memory stays small for any block
            for start in range(0, rows, ROWS_AT_ONCE):
                self.update(features[start : start + ROWS_AT_ONCE], targets.reshape(-1)[start : start + ROWS_AT_ONCE])
            return
        block = torch.cat([features.double(), targets.double().reshape(-1, 1)], dim=1)
        mean = block.mean(dim=0)
        centered = block - mean
        comoment = (centered.T @ centered).cpu()
        mean, low, high = mean.cpu(), block.amin(dim=0).cpu(), block.amax(dim=0).cpu()
        if self._mean is None:
            self._mean, self._comoment, self._low, self._high = mean, comoment, low, high
        else:
            total = self.count + rows
            delta = mean - self._mean
            self._mean = self._mean + delta * (rows / total)
            self._comoment = self._comoment + comoment + torch.outer(delta, delta) * (self.count * rows / total)
            self._low, self._high = torch.minimum(self._low, low), torch.maximum(self._high, high)
        self.count += rows

    @property
    def feature_mean(self) -> Tensor:
        return self._joint_mean()[:-1]

    @property
    def target_mean(self) -> Tensor:
        return self._joint_mean()[-1]

    @property
    def feature_std(self) -> Tensor:
        """Population standard deviation (ddof = 0) of each feature; a constant column gets 1."""
        return self._scales()[:-1]

    @property
    def target_std(self) -> Tensor:
        """Population standard deviation (ddof = 0) of the target; a constant target gets 1."""
        return self._scales()[-1]

    def standardization(self) -> dict[str, list[float]]:
        """The statistics a data module standardises with, as plain floats (the target's as 1-element lists)."""
        return {
            "feature_mean": self.feature_mean.tolist(),
            "feature_scale": self.feature_std.tolist(),
            "target_mean": [float(self.target_mean)],
            "target_scale": [float(self.target_std)],
        }

    def solve(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        standardize: bool = False,
        *,
        tol: float = 1e-12,
        max_sweeps: int = 10_000,
    ) -> tuple[Tensor, Tensor]:
        """The exact minimiser of the penalised mean squared error over the rows seen so far.

        Returns `(weight [d], bias [])` in float64 that map RAW features to targets in original units,
        `targets ≈ features·weight + bias`, minimising

            mean((y - x·w - b)²) + l2·||w||² + l1·||w||₁        (the bias is never penalised)

        With `standardize=True` the penalty is on the weights of standardised features and target:
        with z = (x - feature_mean) / feature_scale and t = (y - target_mean) / target_scale
        (population std, 1 for a constant column) it minimises

            mean((t - z·v - c)²) + l2·||v||² + l1·||v||₁

        and converts back: w = target_scale·v / feature_scale, b = target_mean + target_scale·c - w·feature_mean.
        This is the convention of the model, and of a scikit-learn pipeline `StandardScaler()` then the
        estimator (with the target standardised too); the module docstring maps sklearn's `alpha` to l1, l2.

        l1 = 0 solves (C + l2·I) w = c exactly, C the centred feature covariance (divided by n) and c the
        centred feature-target covariance; l2 = 0 is ordinary least squares, solved by an SVD-based
        least-squares solver so that a singular C (duplicated or constant columns) gets one of its exact
        minimisers. l1 > 0 runs cyclic coordinate descent with soft-thresholding on C and c until the
        largest change of a weight in a sweep is at most `tol` times the largest weight; it raises
        RuntimeError after `max_sweeps` sweeps without getting there. The bias follows from the means.

        Args:
            l1: weight of the L1 penalty, >= 0.
            l2: weight of the squared L2 penalty, >= 0.
            standardize: penalise the weights of standardised features and target (see above).
            tol: coordinate descent's relative convergence threshold, > 0 (l1 > 0 only).
            max_sweeps: coordinate descent's limit on passes over all weights, >= 1 (l1 > 0 only).
        """
        _check_penalty("l1", l1)
        _check_penalty("l2", l2)
        if not (isinstance(tol, numbers.Real) and math.isfinite(tol) and tol > 0):
            raise ConfigError(f"tol must be a finite number > 0, got {tol!r}")
        if not (isinstance(max_sweeps, numbers.Integral) and max_sweeps >= 1):
            raise ConfigError(f"max_sweeps must be an integer >= 1, got {max_sweeps!r}")
        covariance = self._covariance()
        if not bool(torch.isfinite(covariance).all() and torch.isfinite(self._joint_mean()).all()):
            raise ValueError("NormalEquations.solve: the data contain NaN or infinite values")
        feature_covariance, cross_covariance = covariance[:-1, :-1], covariance[:-1, -1]
        if standardize:
            feature_scale, target_scale = self.feature_std, self.target_std
            feature_covariance = feature_covariance / torch.outer(feature_scale, feature_scale)
            cross_covariance = cross_covariance / (feature_scale * target_scale)
        if l1 == 0:
            weight = _ridge(feature_covariance, cross_covariance, float(l2))
        else:
            weight = _coordinate_descent(feature_covariance, cross_covariance, float(l1), float(l2), tol, max_sweeps)
        if standardize:
            weight = target_scale * weight / feature_scale
        return weight, self.target_mean - weight @ self.feature_mean

    def objective(
        self, weight: Tensor, bias: Tensor | float, l1: float = 0.0, l2: float = 0.0, standardize: bool = False
    ) -> float:
        """The value `solve(l1, l2, standardize)` minimises, at any raw-unit `(weight [d], bias)`, over the rows
        seen so far; with no penalty and `standardize=False` it is the mean squared error itself.

        From the statistics alone: mean((y - x·w - b)²) = uᵀ Cov u + (ȳ - x̄·w - b)² with u = [-w, 1].
        With `standardize=True` the error is divided by target_scale² and the penalty is on the
        standardised weight w·feature_scale / target_scale, as in `solve`.
        """
        _check_penalty("l1", l1)
        _check_penalty("l2", l2)
        weight = torch.as_tensor(weight, dtype=torch.float64).reshape(-1)
        bias = float(bias)
        direction = torch.cat([-weight, torch.ones(1, dtype=torch.float64)])
        offset = float(self.target_mean - self.feature_mean @ weight) - bias
        error = float(direction @ self._covariance() @ direction) + offset**2
        if standardize:
            error, weight = error / float(self.target_std) ** 2, weight * self.feature_std / self.target_std
        return error + l2 * float(weight @ weight) + l1 * float(weight.abs().sum())

    def _joint_mean(self) -> Tensor:
        if self._mean is None:
            raise ValueError("NormalEquations: no rows yet; call update(features, targets) first")
        return self._mean

    def _constant(self) -> Tensor:
        self._joint_mean()
        return self._low == self._high

    def _covariance(self) -> Tensor:
        """Covariance of [x, y] (divided by n), exactly 0 in the rows and columns of constant ones."""
        constant = self._constant()
        covariance = self._comoment / self.count
        return covariance.masked_fill(constant.unsqueeze(0) | constant.unsqueeze(1), 0.0)

    def _scales(self) -> Tensor:
        std = self._covariance().diagonal().clamp(min=0).sqrt()
        return torch.where(std > 0, std, torch.ones_like(std))


def least_squares(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The exact least-squares weight and bias for `targets ≈ features·w + b`, in float64."""
    statistics = NormalEquations()
    statistics.update(features, targets)
    return statistics.solve()


def _check_penalty(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0 (0 turns the penalty off), got {value!r}")


def _ridge(covariance: Tensor, cross_covariance: Tensor, l2: float) -> Tensor:
    system = covariance + l2 * torch.eye(len(covariance), dtype=torch.float64)
    # Scaling rows and columns to a unit diagonal first makes the solver's rank cut-off (relative to the
    # largest singular value) blind to the features' units: a column in micro-units is not dropped.
    diagonal = system.diagonal()
    scale = torch.where(diagonal > 0, diagonal.sqrt(), torch.ones_like(diagonal))
    scaled = system / torch.outer(scale, scale)
    solution = torch.linalg.lstsq(scaled, (cross_covariance / scale).unsqueeze(-1), driver="gelsd").solution
    return solution.squeeze(-1) / scale


def _coordinate_descent(
    covariance: Tensor, cross_covariance: Tensor, l1: float, l2: float, tol: float, max_sweeps: int
) -> Tensor:
    # Minimises wᵀCw - 2cᵀw + l2·||w||² + l1·||w||₁ (the objective less its constant, after the bias).
    # In weight j alone: (C_jj + l2)·w_j² - 2·r_j·w_j + l1·|w_j|, r_j = c_j - Σ_{k≠j} C_jk·w_k, whose
    # minimiser is soft_threshold(r_j, l1/2) / (C_jj + l2). NumPy: per-element torch calls cost ~5x more.
    gram, target = covariance.numpy(), cross_covariance.numpy()
    denominators = np.diagonal(gram) + l2
    threshold = l1 / 2
    weight = np.zeros(len(target))
    largest_change = 0.0
    for _ in range(max_sweeps):
        residual = target - gram @ weight  # recomputed each sweep, so rounding does not drift
        largest_change = 0.0
        for j in range(len(weight)):
            if denominators[j] == 0:  # a constant column with l2 = 0: its weight only adds penalty
                continue
            old = weight[j]
            correlation = residual[j] + gram[j, j] * old
            excess = abs(correlation) - threshold
            new = math.copysign(excess, correlation) / denominators[j] if excess > 0 else 0.0  # +0.0, never -0.0
            if new != old:
                residual -= gram[:, j] * (new - old)
                weight[j] = new
                largest_change = max(largest_change, abs(new - old))
        if largest_change <= tol * np.abs(weight).max():
            return torch.from_numpy(weight)
    raise RuntimeError(
        f"coordinate descent did not converge in {max_sweeps} sweeps: the last one changed a weight by "
        f"{largest_change:.3g}, more than tol={tol:g} times the largest weight {np.abs(weight).max():.3g}; "
        f"strongly correlated features converge slowly: raise max_sweeps or tol"
    )
