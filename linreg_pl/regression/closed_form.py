"""Exact linear-regression answers (least squares, ridge, lasso, elastic net) from one pass over the data.

    from linreg_pl.regression.closed_form import NormalEquations
    statistics = NormalEquations()
    for features, targets in blocks_of_rows:      # in memory or streamed from disk
        statistics.update(features, targets)
    weight, bias = statistics.solve(l1=1e-3, l2=1e-2, standardize=True)

The data are never held: `update` folds each block of rows into the float64 triangular factor R of a
QR decomposition of the design [1, x, y] ((d + 2)² numbers) and each column's mean, spread and range;
`merge` combines the statistics of two shards. `solve` works from R, which keeps the design's condition
number where the normal equations (a covariance matrix, RᵀR) would square it: on polynomial features
x, ..., x¹⁰ about 7 correct digits instead of none. `least_squares(features, targets)`, for rows in
memory, adds a second pass (`refine`) with compensated residuals and gradient (the digits each reaches:
docs/statistics.md). They are the yardsticks for what SGD reaches, and `standardization()` gives the
statistics a data module standardises with.

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
# singular values of the column-scaled centred R below this fraction of the largest are rounding noise
_RANK_TOLERANCE = 1e-12
# `refine` computes a residual compensated where its terms exceed it this many times (in float64 it loses
# about log2 of this many bits of its 53 to cancellation; the compensated one costs ~25 times more)
_CANCELLATION = 64.0


class NormalEquations:
    """Float64 sufficient statistics of (features, targets) for linear regression, gathered block by block.

    The main one is R, the (d + 2)² upper-triangular factor of the design [1, x, y] (a ones column first,
    then the features, then the target): each block is factored with a Householder QR and stacked under the
    running R, which is factored again (`merge` does the same with another process's R). Solving from R
    keeps the design's condition number as it is, where the centred Gram matrix RᵀR would square it: with
    polynomial columns x, x², ..., x¹⁰ on [0, 10] (condition ~1e7 after scaling) the Gram matrix leaves no
    correct digit, R about seven, and `least_squares`, which also refines against the data, nearly all. The ones
    column comes first so that R's lower-right block is the factor of the centred [x, y] (Q's first column
    is 1/√n): the bias is eliminated without centring, and ||R·[-b, -w, 1]||² is the sum of squared residuals.

    Beside R, each column's mean, centred sum of squares (merged with the parallel algorithm of Chan, Golub
    and LeVeque) and range: the means and population stds that `standardization()` gives, and columns whose
    values are all equal, found exactly, which get scale 1 and weight 0 rather than a fit to rounding noise.
    """

    def __init__(self) -> None:
        self.count = 0
        # over the joint vector [x, y]: mean, Σ (v - mean)², and the range of each column
        self._mean: Tensor | None = None
        self._squares: Tensor | None = None
        self._low: Tensor | None = None
        self._high: Tensor | None = None
        # R of [1, x, y]: at most d + 2 rows (fewer while fewer rows have been seen), upper triangular
        self._factor: Tensor | None = None

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
        design = torch.empty(rows, features.shape[1] + 2, dtype=torch.float64, device=features.device)
        design[:, 0] = 1.0
        design[:, 1:-1] = features
        design[:, -1] = targets.reshape(-1)
        block = design[:, 1:]
        variance, mean = torch.var_mean(block, dim=0, correction=0)
        low, high = block.amin(dim=0).cpu(), block.amax(dim=0).cpu()
        factor = torch.linalg.qr(design, mode="r").R.cpu()
        self._absorb(rows, mean.cpu(), variance.cpu() * rows, low, high, factor)

    def merge(self, other: NormalEquations) -> NormalEquations:
        """Adds the rows `other` has seen (from another process or shard), as if they had been `update`d here:
        the two R factors are stacked and factored again, the means and sums of squares merged. Returns self."""
        if not isinstance(other, NormalEquations):
            raise TypeError(f"NormalEquations.merge: expected NormalEquations, got {type(other).__name__}")
        if other.count == 0:
            return self
        if self._mean is not None and len(other._mean) != len(self._mean):
            raise ValueError(
                f"NormalEquations.merge: the other statistics have {len(other._mean) - 1} features, "
                f"these have {len(self._mean) - 1}"
            )
        self._absorb(other.count, other._mean, other._squares, other._low, other._high, other._factor)
        return self

    def _absorb(self, rows: int, mean: Tensor, squares: Tensor, low: Tensor, high: Tensor, factor: Tensor) -> None:
        if self._mean is None:
            self._mean, self._squares, self._low, self._high, self._factor = mean, squares, low, high, factor
        else:
            total = self.count + rows
            delta = mean - self._mean
            self._mean = self._mean + delta * (rows / total)
            self._squares = self._squares + squares + delta**2 * (self.count * rows / total)
            self._low, self._high = torch.minimum(self._low, low), torch.maximum(self._high, high)
            self._factor = torch.linalg.qr(torch.cat([self._factor, factor]), mode="r").R
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

    def standardization(self) -> dict[str, list]:
        """The statistics a data module standardises with, as plain floats (the target's as 1-element lists),
        and `factor`, R itself [(d + 2) rows of d + 2] with a diagonal >= 0 (R is then unique): the model
        preconditions SGD with it (`LinearRegression`)."""
        factor = self._factor
        width = factor.shape[1]
        if len(factor) < width:  # fewer rows than columns seen: the missing rows of R are zeros
            factor = torch.cat([factor, torch.zeros(width - len(factor), width, dtype=torch.float64)])
        signs = torch.where(factor.diagonal() < 0, -1.0, 1.0).to(torch.float64)
        return {
            "feature_mean": self.feature_mean.tolist(),
            "feature_scale": self.feature_std.tolist(),
            "target_mean": [float(self.target_mean)],
            "target_scale": [float(self.target_std)],
            "factor": (signs.unsqueeze(-1) * factor + 0.0).tolist(),  # + 0.0: no -0.0 below the diagonal
        }

    def condition_number(self, intercept: bool = True) -> float:
        """The condition number of the design the model trains on, its standardised features (each divided by
        its std; centred when there is an intercept): the ratio of the largest to the smallest singular value
        of R's block for them. inf when the features are collinear to rounding."""
        kept, factor, _ = self._centred_factor() if intercept else self._uncentred_factor()
        if not bool(kept.any()):
            return 1.0
        values = torch.linalg.svdvals(factor / self.feature_std[kept])
        return float(values[0] / values[-1]) if _rank_is_full(values) else math.inf

    def solve(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        standardize: bool = False,
        intercept: bool = True,
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

        l1 = 0 (least squares, ridge) is solved from the centred block S of R, never from SᵀS: a triangular
        solve of S·w = s, with ridge first folding the penalty in by a QR of S stacked on √(n·l2)·I. When the
        features are exactly collinear (S singular to rounding, relative to its largest singular value after
        scaling each column by its std) it gives, of the minimisers, the one with the smallest
        ||feature_std·w|| (the minimum norm in standardised units, whatever the features' units), by an SVD.
        A constant column gets weight 0. l1 > 0 runs cyclic coordinate descent with soft-thresholding on the
        covariance SᵀS / n until the largest change of a weight in a sweep is at most `tol` times the largest
        weight; it raises RuntimeError after `max_sweeps` sweeps without getting there. The bias follows
        from the means.

        With `intercept=False` it fits `targets ≈ features·weight` (bias 0), from the factor of the uncentred
        [x, y] (a QR of R without its ones column); standardising then only scales (by the same stds, as
        scikit-learn's `StandardScaler(with_mean=False)`), which keeps y = x·w exact. A constant column is then
        a feature like any other.

        Args:
            l1: weight of the L1 penalty, >= 0.
            l2: weight of the squared L2 penalty, >= 0.
            standardize: penalise the weights of standardised features and target (see above).
            intercept: fit the bias; False fixes it at 0.
            tol: coordinate descent's relative convergence threshold, > 0 (l1 > 0 only).
            max_sweeps: coordinate descent's limit on passes over all weights, >= 1 (l1 > 0 only).
        """
        _check_penalty("l1", l1)
        _check_penalty("l2", l2)
        if not (isinstance(tol, numbers.Real) and math.isfinite(tol) and tol > 0):
            raise ConfigError(f"tol must be a finite number > 0, got {tol!r}")
        if not (isinstance(max_sweeps, numbers.Integral) and max_sweeps >= 1):
            raise ConfigError(f"max_sweeps must be an integer >= 1, got {max_sweeps!r}")
        kept, centred, cross = self._centred_factor() if intercept else self._uncentred_factor()
        scale = self.feature_std[kept]
        target_scale = self.target_std if standardize else torch.ones((), dtype=torch.float64)
        scaled = centred / scale  # columns in units of their std: the rank cut-off is blind to units
        cross = cross / target_scale
        if not bool(kept.any()):  # every feature constant: the bias alone
            solution = torch.zeros(0, dtype=torch.float64)
        elif l1 == 0:
            if l2 > 0:  # ||S·v - s||² + n·l2·||p·v||² is the least squares of [S; √(n·l2)·p] against [s; 0]
                penalty = torch.ones_like(scale) if standardize else 1 / scale
                stacked = torch.cat([scaled, math.sqrt(self.count * l2) * torch.diag(penalty)])
                extended = torch.cat([cross, torch.zeros_like(cross)]).unsqueeze(-1)
                factor = torch.linalg.qr(torch.cat([stacked, extended], dim=1), mode="r").R
                scaled, cross = factor[:-1, :-1], factor[:-1, -1]  # the last row: the residual
            solution = _minimum_norm(scaled, cross)
        else:
            covariance, cross_covariance = scaled.T @ scaled / self.count, scaled.T @ cross / self.count
            if not standardize:  # coordinate descent on the raw weights, as the penalty is on them
                covariance = covariance * torch.outer(scale, scale)
                cross_covariance = cross_covariance * scale
            solution = _coordinate_descent(covariance, cross_covariance, float(l1), float(l2), tol, max_sweeps)
            if not standardize:
                solution = solution * scale
        weight = torch.zeros(len(kept), dtype=torch.float64)
        weight[kept] = target_scale * solution / scale
        if not intercept:
            return weight, torch.zeros((), dtype=torch.float64)
        return weight, self.target_mean - weight @ self.feature_mean

    def objective(
        self,
        weight: Tensor,
        bias: Tensor | float,
        l1: float = 0.0,
        l2: float = 0.0,
        standardize: bool = False,
        intercept: bool = True,
    ) -> float:
        """The value `solve(l1, l2, standardize, intercept)` minimises, at any raw-unit `(weight [d], bias)`, over
        the rows seen so far (with `intercept=False` the bias is 0, whatever is given); with no penalty and
        `standardize=False` it is the mean squared error itself.

        From R alone: the residuals are [1, x, y]·u with u = [-b, -w, 1], so their sum of squares is ||R·u||²
        (no covariance quadratic form, whose terms would cancel). With `standardize=True` the error is divided
        by target_scale² and the penalty is on the standardised weight w·feature_scale / target_scale, as in
        `solve`.
        """
        _check_penalty("l1", l1)
        _check_penalty("l2", l2)
        self._joint_mean()
        weight = torch.as_tensor(weight, dtype=torch.float64).reshape(-1)
        bias = bias if intercept else 0.0
        direction = torch.cat([torch.tensor([-float(bias)], dtype=torch.float64), -weight, torch.ones(1)])
        error = float(torch.linalg.vector_norm(self._factor @ direction)) ** 2 / self.count
        if standardize:
            error, weight = error / float(self.target_std) ** 2, weight * self.feature_std / self.target_std
        return error + l2 * float(weight @ weight) + l1 * float(weight.abs().sum())

    def factor_of(self, columns: list[int], intercept: bool = True) -> Tensor:
        """The upper-triangular factor [k + 1, k + 1] of the feature columns `columns` (in that order) and the
        target: of the centred [x, y] with an intercept (the ones column eliminated first), of the raw [x, y]
        without. Its last column's last entry is the residual norm of y on those columns, its top-left block T
        has TᵀT = the columns' (centred) Gram matrix. From R alone, by a QR of the columns wanted."""
        self._joint_mean()
        if not bool(torch.isfinite(self._factor).all()):
            raise ValueError("NormalEquations: the data contain NaN or infinite values")
        picked = [*([0] if intercept else []), *(1 + c for c in columns), len(self._mean)]  # y: R's last column
        factor = torch.linalg.qr(self._factor[:, picked], mode="r").R
        if len(factor) < len(picked):  # fewer rows than columns seen: the missing rows of R are zeros
            factor = torch.cat([factor, torch.zeros(len(picked) - len(factor), len(picked), dtype=torch.float64)])
        return factor[1:, 1:] if intercept else factor

    def _joint_mean(self) -> Tensor:
        if self._mean is None:
            raise ValueError("NormalEquations: no rows yet; call update(features, targets) first")
        return self._mean

    def _constant(self) -> Tensor:
        self._joint_mean()
        return self._low == self._high

    def _centred_factor(self) -> tuple[Tensor, Tensor, Tensor]:
        """The non-constant features (a mask [d]) and the factor of the centred [x, y] on them: S [k, k]
        upper triangular and s [k], with ||S·w - s||² the sum of squared centred residuals (s = 0 for a
        constant target)."""
        constant = self._constant()
        if not bool(torch.isfinite(self._factor).all() and torch.isfinite(self._mean).all()):
            raise ValueError("NormalEquations.solve: the data contain NaN or infinite values")
        kept = ~constant[:-1]
        factor = self._factor
        if not bool(kept.all()):  # drop the constant columns and bring R back to triangular form
            columns = torch.cat([torch.tensor([0]), 1 + torch.nonzero(kept).flatten(), torch.tensor([len(kept) + 1])])
            factor = torch.linalg.qr(factor[:, columns], mode="r").R
        width = factor.shape[1]
        if len(factor) < width:  # fewer rows than columns seen: the missing rows of R are zeros
            factor = torch.cat([factor, torch.zeros(width - len(factor), width, dtype=torch.float64)])
        centred, cross = factor[1:-1, 1:-1], factor[1:-1, -1]
        if bool(constant[-1]):
            cross = torch.zeros_like(cross)
        return kept, centred, cross

    def _uncentred_factor(self) -> tuple[Tensor, Tensor, Tensor]:
        """As `_centred_factor` for a fit without intercept: every feature (a mask [d]), U [d, d] and u [d]
        from a QR of R without its ones column, with ||U·w - u||² the sum of squared residuals of y - x·w."""
        self._joint_mean()
        if not bool(torch.isfinite(self._factor).all()):
            raise ValueError("NormalEquations.solve: the data contain NaN or infinite values")
        factor = torch.linalg.qr(self._factor[:, 1:], mode="r").R
        width = factor.shape[1]
        if len(factor) < width:
            factor = torch.cat([factor, torch.zeros(width - len(factor), width, dtype=torch.float64)])
        return torch.ones(width - 1, dtype=torch.bool), factor[:-1, :-1], factor[:-1, -1]

    def _scales(self) -> Tensor:
        std = torch.where(self._constant(), 0.0, self._squares / self.count).clamp(min=0).sqrt()
        return torch.where(std > 0, std, torch.ones_like(std))


def least_squares(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The exact least-squares weight and bias for `targets ≈ features·w + b`, in float64: `solve()` from one
    pass, then `refine`d by a second pass over the rows (they are in memory here)."""
    statistics = NormalEquations()
    statistics.update(features, targets)
    return refine(features, targets, *statistics.solve(), statistics)


def refine(
    features: Tensor, targets: Tensor, weight: Tensor, bias: Tensor, statistics: NormalEquations, steps: int = 1
) -> tuple[Tensor, Tensor]:
    """The least-squares `(weight, bias)` from `statistics.solve()` made more accurate by passes over the rows.

    Each step computes the residuals r = y - x·w - b from the data, in about twice float64's precision
    (`_residual`) in the rows where the terms x_j·w_j that cancel in them are large against them (in plain
    float64 their rounding would cap the accuracy on ill-conditioned designs), and corrects the weight by
    the least-squares fit to them solved through R alone (the corrected semi-normal equations of Björck:
    SᵀS·δ = (x - x̄)ᵀr by two triangular solves with S, or its minimum-norm solution where S is singular);
    the bias follows from the mean residual. The gradient xᵀr - x̄·Σr is compensated too (`_column_dot`): its
    terms cancel at the optimum, so in plain float64 its rounding, not the solver, capped the accuracy on
    Filip-like degree-10 designs (condition ~4e9; figures in docs/statistics.md); it costs ~4 times a plain
    float64 pass. `statistics` must hold exactly these rows.
    """
    if statistics.count != len(features):
        raise ValueError(f"refine: the statistics hold {statistics.count} rows, the data {len(features)}")
    kept, centred, _ = statistics._centred_factor()
    scale = statistics.feature_std[kept]
    scaled = centred / scale
    mean = statistics.feature_mean
    weight = torch.as_tensor(weight, dtype=torch.float64).clone()
    bias = torch.as_tensor(bias, dtype=torch.float64).clone()
    for _ in range(steps):
        gradient = torch.zeros(len(weight), dtype=torch.float64), torch.zeros(len(weight), dtype=torch.float64)
        total = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        for start in range(0, len(features), ROWS_AT_ONCE):
            x = features[start : start + ROWS_AT_ONCE].to("cpu", torch.float64)
            y = targets.reshape(-1)[start : start + ROWS_AT_ONCE].to("cpu", torch.float64)
            residual = y - x @ weight - bias
            # rows where the terms that cancel in r are much larger than r: computed again, compensated
            cancelling = y.abs() + x.abs() @ weight.abs() + bias.abs() > _CANCELLATION * residual.abs()
            if bool(cancelling.any()):
                residual[cancelling] = _residual(x[cancelling], y[cancelling], weight, bias)
            # xᵀr and Σr, compensated (see the docstring); x is not centred first, as x - x̄ rounded is a perturbed
            # design
            gradient = _add_compensated(gradient, _column_dot(x, residual))
            total = _add_compensated(total, _column_dot(torch.ones(len(x), 1, dtype=torch.float64), residual))
        total_residual = float(total[0] + total[1])
        gradient = (gradient[0] + gradient[1]) - mean * total_residual  # (x - x̄)ᵀr
        step = torch.zeros_like(weight)
        step[kept] = _normal_solution(scaled, gradient[kept] / scale) / scale
        weight += step
        bias += total_residual / statistics.count - step @ mean
    return weight, bias


def _check_penalty(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0 (0 turns the penalty off), got {value!r}")


def _residual(features: Tensor, targets: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """targets - features·weight - bias [n] (float64 on the CPU) as if computed in twice float64's precision,
    then rounded: the compensated dot product Dot2 of Ogita, Rump and Oishi, with the exact rounding errors
    of the products from Dekker's splitting (no fused multiply-add needed) and of the sums from TwoSum."""
    products = features * weight
    product_errors = _product_error(features, weight, products)
    total, compensation = targets, torch.zeros_like(targets)
    for term in [*products.T, bias.expand_as(targets)]:
        total, error = _two_sum(total, -term)
        compensation = compensation + error
    return total + (compensation - product_errors.sum(dim=1))


def _column_dot(features: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """featuresᵀ·values [d] (float64) as an unevaluated sum high + low of twice float64's precision: the exact
    products (Dekker) summed pairwise with TwoSum, their rounding errors kept in `low`."""
    products = features * values.unsqueeze(-1)
    low = _product_error(features, values.unsqueeze(-1), products).sum(dim=0)
    while len(products) > 1:
        if len(products) % 2:
            products = torch.cat([products, torch.zeros_like(products[:1])])
        products, error = _two_sum(products[0::2], products[1::2])
        low = low + error.sum(dim=0)
    high = products[0] if len(products) else torch.zeros(features.shape[1], dtype=torch.float64)
    return _two_sum(high, low)


def _add_compensated(total: tuple[Tensor, Tensor], term: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(high, low) + (high, low), kept as (high, low)."""
    high, error = _two_sum(total[0], term[0])
    return _two_sum(high, error + total[1] + term[1])


def _two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """s = fl(a + b) and the exact error a + b - s (Knuth)."""
    total = a + b
    b_virtual = total - a
    return total, (a - (total - b_virtual)) + (b - b_virtual)


def _split(a: Tensor) -> tuple[Tensor, Tensor]:
    """a = high + low exactly, each with at most 26 significant bits (Dekker)."""
    scaled = a * 134217729.0  # 2**27 + 1
    high = scaled - (scaled - a)
    return high, a - high


def _product_error(a: Tensor, b: Tensor, product: Tensor) -> Tensor:
    """The exact error a·b - fl(a·b) (Dekker), elementwise with broadcasting."""
    a_high, a_low = _split(a)
    b_high, b_low = _split(b)
    return ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low


def _rank_is_full(singular_values: Tensor) -> bool:
    return len(singular_values) == 0 or bool(singular_values[-1] > _RANK_TOLERANCE * singular_values[0])


def _minimum_norm(factor: Tensor, rhs: Tensor) -> Tensor:
    """The minimum-norm minimiser of ||factor·v - rhs|| for an upper-triangular `factor` [k, k]: a
    triangular solve, or the SVD's pseudo-inverse where `factor` is singular to rounding."""
    if _rank_is_full(torch.linalg.svdvals(factor)):
        return torch.linalg.solve_triangular(factor, rhs.unsqueeze(-1), upper=True).squeeze(-1)
    left, singular_values, right = torch.linalg.svd(factor)
    used = singular_values > _RANK_TOLERANCE * singular_values[0]
    return right[used].T @ ((left[:, used].T @ rhs) / singular_values[used])


def _normal_solution(factor: Tensor, rhs: Tensor) -> Tensor:
    """(factorᵀ·factor)⁺·rhs for an upper-triangular `factor` [k, k], without forming factorᵀ·factor."""
    if _rank_is_full(torch.linalg.svdvals(factor)):
        inner = torch.linalg.solve_triangular(factor.T, rhs.unsqueeze(-1), upper=False)
        return torch.linalg.solve_triangular(factor, inner, upper=True).squeeze(-1)
    _, singular_values, right = torch.linalg.svd(factor)
    used = singular_values > _RANK_TOLERANCE * singular_values[0]
    return right[used].T @ ((right[used] @ rhs) / singular_values[used] ** 2)


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
