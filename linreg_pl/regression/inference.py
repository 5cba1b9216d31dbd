"""Inference for ordinary least squares from the float64 factor `NormalEquations` keeps: what R's `summary(lm)` and
statsmodels' `OLS(...).fit()` print, for the exact optimum of the training rows.

    python -m linreg_pl fit --config configs/csv.yaml --data.path my_table.csv --data.target price
    # ParameterReport prints the coefficient table; <run>/parameters.csv and <run>/summary.csv hold it all

    from linreg_pl.regression.inference import ordinary_least_squares
    fit = ordinary_least_squares(statistics, rows=(features, targets))   # rows: for HC3 and a refined estimate

Aliased columns (exactly, or to the tolerance below, linear combinations of the columns before them, the
intercept included) are found from the factor and left out, as R's `lm` does: their coefficients are NaN (empty
in the files), the rest is the least squares of the identifiable columns. The standard errors are
σ·sqrt(diag((XᵀX)⁻¹)) with (XᵀX)⁻¹ = T⁻¹T⁻ᵀ, T the factor of the (centred) identifiable columns, never the Gram
matrix's inverse; HC3 (MacKinnon and White) needs each row's leverage, a second pass over the rows. The t and F
distributions are scipy's (the `stats` extra); without it the p values and intervals are left empty.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from linreg_pl.regression.closed_form import ROWS_AT_ONCE, NormalEquations, refine

# A column is aliased when the part of it that the columns before it (and the intercept) do not explain has a norm
# below this fraction of its own (centred, or without intercept raw) norm: R's lm.fit makes the same test in the
# same column order (LINPACK's dqrdc2 with limited pivoting) with `tol = 1e-07`, which declares NIST Filip's x¹⁰
# aliased (its part left is 6e-8): this one keeps every column float64 can tell from the others (an exact
# combination, rounded in float64, leaves ~1e-16 to 1e-13), and the whitened SGD trains such designs.
ALIAS_TOLERANCE = 1e-10
# A row whose leverage is within this of 1 alone determines a direction of the coefficients: HC3 divides its
# residual, 0 to rounding, by 1 - h, 0 to rounding, so the coefficients it moves get no HC3 error.
_LEVERAGE_ONE = 1e-10
# ... and a coefficient is moved by such a row when the row's influence on it exceeds this fraction of its
# classical standard error's scale (the influence is at most that scale: a unit-free test).
_INFLUENCE = 1e-6
MISSING_SCIPY = 'p values and confidence intervals need scipy, the stats extra: pip install -e ".[stats]"'
SUMMARY_NAMES = (
    "rows",
    "parameters",
    "df_residual",
    "residual_std_error",
    "r_squared",
    "adj_r_squared",
    "f_statistic",
    "f_p_value",
    "log_likelihood",
    "aic",
    "bic",
    "condition_number",
)


@dataclass
class OrdinaryLeastSquares:
    """The least-squares fit and its inference. Per-parameter tensors have d + 1 entries, the d weights then the
    bias (0 with no intercept, and NaN inference), NaN where undefined (aliased, or no residual degrees of freedom,
    or no scipy for p values and intervals)."""

    weight: Tensor
    bias: Tensor
    aliased: Tensor  # [d] bool
    intercept: bool
    std_error: Tensor
    std_error_hc3: Tensor
    t_value: Tensor
    p_value: Tensor
    ci_low: Tensor
    ci_high: Tensor
    summary: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def estimate(self) -> Tensor:
        return torch.cat([self.weight, self.bias.reshape(1)])


def stats_available() -> bool:
    return importlib.util.find_spec("scipy") is not None


def aliased_columns(statistics: NormalEquations, intercept: bool = True) -> Tensor:
    """[d] bool: the columns that are, to `ALIAS_TOLERANCE`, linear combinations of the columns before them (and of
    the ones column when there is an intercept: a constant column is then aliased), in column order as R's `lm`."""
    constant = statistics._constant()[:-1]
    columns = [j for j in range(len(constant)) if not (intercept and bool(constant[j]))]
    aliased = torch.ones(len(constant), dtype=torch.bool)
    if columns:
        kept = independent_columns(statistics.factor_of(columns, intercept)[:-1, :-1])
        aliased[[columns[j] for j in kept]] = False
    return aliased


def independent_columns(factor: Tensor) -> list[int]:
    """The columns of an upper-triangular factor [m, k] (of a design's columns, in order) that are not, to
    `ALIAS_TOLERANCE` of their norm, combinations of the columns kept before them: R's rule. A zero column is
    dependent."""
    norms = torch.linalg.vector_norm(factor, dim=0)
    kept: list[int] = []
    for position in range(factor.shape[1]):
        j = len(kept)  # factor: the factor of the kept columns and the undecided ones, in order
        if j < len(factor) and abs(float(factor[j, j])) > ALIAS_TOLERANCE * float(norms[position]) > 0:
            kept.append(position)
        else:  # drop it and bring the rest back to triangular form
            factor = torch.linalg.qr(torch.cat([factor[:, :j], factor[:, j + 1 :]], dim=1), mode="r").R
    return kept


def largest_leverage(statistics: NormalEquations, features: Tensor) -> float:
    """The largest leverage of a row of `features` (the rows `statistics` holds) in the centred design, without the
    intercept's 1/n: max ||T⁻ᵀ(xᵢ - x̄)||², T the factor of the identifiable centred columns. A row of leverage h
    alone gives a minibatch of B rows a curvature of n·h/B along its direction in the whitened problem."""
    aliased = aliased_columns(statistics)
    kept = torch.nonzero(~aliased).flatten()
    if not len(kept):
        return 0.0
    mean, scale = statistics.feature_mean[kept], statistics.feature_std[kept]
    inverse = torch.linalg.solve_triangular(
        statistics.factor_of(kept.tolist())[:-1, :-1] / scale, torch.eye(len(kept), dtype=torch.float64), upper=True
    )
    largest = 0.0
    for start in range(0, len(features), ROWS_AT_ONCE):
        x = features[start : start + ROWS_AT_ONCE, kept].to("cpu", torch.float64)
        largest = max(largest, float(((((x - mean) / scale) @ inverse) ** 2).sum(dim=1).max()))
    return largest


def ordinary_least_squares(
    statistics: NormalEquations,
    rows: tuple[Tensor, Tensor] | None = None,
    intercept: bool = True,
    level: float = 0.95,
    blocks: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None,
) -> OrdinaryLeastSquares:
    """The least squares of the rows `statistics` holds, with its inference.

    `rows`, the same rows (features [n, d], targets [n]) in memory, are passed over twice more: to refine the
    estimate (as `least_squares` does) and for each row's leverage and residual (HC3). Without them the estimate
    is the one-pass solution from the factor, and HC3 takes a pass over `blocks()` (the same rows, block by
    block: a streamed table's) or is left empty. `level`: the confidence intervals' coverage.
    """
    n = statistics.count
    d = len(statistics.feature_mean)
    aliased = aliased_columns(statistics, intercept)
    kept = torch.nonzero(~aliased).flatten()
    k = len(kept)
    notes = []
    if bool(aliased.any()):
        notes.append(f"{int(aliased.sum())} not defined because of singularities")
    mean = statistics.feature_mean[kept] if intercept else torch.zeros(k, dtype=torch.float64)
    scale = statistics.feature_std[kept]
    factor = statistics.factor_of(kept.tolist(), intercept) if k else torch.zeros(1, 1, dtype=torch.float64)
    scaled = factor[:-1, :-1] / scale  # columns in units of their std: the inverse is as accurate as they allow
    inverse = torch.linalg.solve_triangular(scaled, torch.eye(k, dtype=torch.float64), upper=True)
    solution = inverse @ factor[:-1, -1] / scale if k else torch.zeros(0, dtype=torch.float64)
    weight = torch.zeros(d, dtype=torch.float64)
    weight[kept] = solution
    bias = (
        statistics.target_mean - weight @ statistics.feature_mean if intercept else torch.zeros((), dtype=torch.float64)
    )
    if rows is not None and intercept:  # a second pass: the exact optimum on ill-conditioned designs (`refine`)
        features, targets = rows[0].to("cpu", torch.float64), rows[1].to("cpu", torch.float64).reshape(-1)
        if bool(aliased.any()):
            identifiable = NormalEquations()
            identifiable.update(features[:, kept], targets)
            weight[kept], bias = refine(features[:, kept], targets, weight[kept], bias, identifiable)
        else:
            weight, bias = refine(features, targets, weight, bias, statistics)
    residual_squares = statistics.objective(weight, bias, intercept=intercept) * n
    parameters = k + int(intercept)
    df = n - parameters
    # L maps the whitened coefficients θ, whose covariance is σ²·I, to (w_kept, b): Cov = σ²·L·Lᵀ
    if intercept:
        to_weight = torch.cat([torch.zeros(k, 1, dtype=torch.float64), inverse / scale.unsqueeze(-1)], dim=1)
        to_bias = torch.cat([torch.tensor([1 / math.sqrt(n)], dtype=torch.float64), -(mean / scale) @ inverse])
        mapping = torch.cat([to_weight, to_bias.unsqueeze(0)])
    else:
        mapping = inverse / scale.unsqueeze(-1)
    nan = torch.full((d + 1,), math.nan, dtype=torch.float64)
    positions = torch.cat([kept, torch.tensor([d])]) if intercept else kept
    std_error, std_error_hc3 = nan.clone(), nan.clone()
    if df > 0:
        sigma = math.sqrt(residual_squares / df)
        std_error[positions] = sigma * torch.linalg.vector_norm(mapping, dim=1)
        if rows is not None or blocks is not None:
            passed = _slices(*rows) if rows is not None else blocks()
            std_error_hc3[positions] = _hc3(statistics, passed, weight, bias, kept, mean, scale, inverse, mapping)
        else:
            notes.append("std_error_hc3 needs a second pass over the training rows: none was given")
    else:
        sigma = math.nan
        notes.append(f"no inference: {n} rows leave no residual degrees of freedom for {parameters} parameters")
    estimate = torch.cat([weight, bias.reshape(1)])
    estimate[:d][aliased] = math.nan
    t_value = estimate / std_error
    p_value, ci_low, ci_high = nan.clone(), nan.clone(), nan.clone()
    summary = _summary(statistics, residual_squares, parameters, intercept, sigma)
    if stats_available() and df > 0:
        from scipy import stats

        p_value = torch.from_numpy(2 * stats.t.sf(t_value.abs().numpy(), df))
        quantile = float(stats.t.ppf(0.5 + level / 2, df))
        ci_low, ci_high = estimate - quantile * std_error, estimate + quantile * std_error
        if not math.isnan(summary["f_statistic"]):
            summary["f_p_value"] = float(stats.f.sf(summary["f_statistic"], parameters - int(intercept), df))
    elif df > 0:
        notes.append(MISSING_SCIPY)
    # of the standardised identifiable columns (aliased ones left out), as `NormalEquations.condition_number`
    summary["condition_number"] = _condition_number(scaled) if k else 1.0
    return OrdinaryLeastSquares(
        weight=estimate[:d],
        bias=estimate[d] if intercept else torch.zeros((), dtype=torch.float64),
        aliased=aliased,
        intercept=intercept,
        std_error=std_error,
        std_error_hc3=std_error_hc3,
        t_value=t_value,
        p_value=p_value,
        ci_low=ci_low,
        ci_high=ci_high,
        summary=summary,
        notes=notes,
    )


def _condition_number(factor: Tensor) -> float:
    values = torch.linalg.svdvals(factor)
    return float(values[0] / values[-1]) if float(values[-1]) > 0 else math.inf


def _summary(
    statistics: NormalEquations, residual_squares: float, parameters: int, intercept: bool, sigma: float
) -> dict[str, float]:
    """The fit's one-number statistics. Without intercept R² and F are uncentred (against y = 0), as R and NIST
    give them. The log-likelihood is the Gaussian one at σ̂² = RSS/n; AIC and BIC count the coefficients (not σ), as
    statsmodels does (R's AIC() and BIC() count σ too: theirs are 2 and log(n) larger)."""
    n = statistics.count
    df = n - parameters
    target_mean = float(statistics.target_mean)
    centred = float(statistics._squares[-1])
    total = centred if intercept else centred + n * target_mean**2
    r_squared = 1 - residual_squares / total if total > 0 else math.nan
    model_df = parameters - int(intercept)
    adj = 1 - (1 - r_squared) * (n - int(intercept)) / df if df > 0 else math.nan
    f_statistic = (
        (total - residual_squares) / model_df / (residual_squares / df)
        if df > 0 and model_df > 0 and residual_squares > 0
        else math.nan
    )
    log_likelihood = (
        -n / 2 * (math.log(2 * math.pi) + math.log(residual_squares / n) + 1) if residual_squares > 0 else math.inf
    )
    return {
        "rows": float(n),
        "parameters": float(parameters),
        "df_residual": float(df),
        "residual_std_error": sigma,
        "r_squared": r_squared,
        "adj_r_squared": adj,
        "f_statistic": f_statistic,
        "f_p_value": math.nan,
        "log_likelihood": log_likelihood,
        "aic": -2 * log_likelihood + 2 * parameters,
        "bic": -2 * log_likelihood + math.log(n) * parameters,
        "condition_number": math.nan,
    }


def _slices(features: Tensor, targets: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, len(features), ROWS_AT_ONCE):
        yield features[start : start + ROWS_AT_ONCE], targets.reshape(-1)[start : start + ROWS_AT_ONCE]


def _hc3(
    statistics: NormalEquations,
    blocks: Iterable[tuple[Tensor, Tensor]],
    weight: Tensor,
    bias: Tensor,
    kept: Tensor,
    mean: Tensor,
    scale: Tensor,
    inverse: Tensor,
    mapping: Tensor,
) -> Tensor:
    """HC3 standard errors of (w_kept, b): sqrt(diag(L·Σ ωᵢ gᵢgᵢᵀ·Lᵀ)), gᵢ the row's whitened design
    ([1/√n, T⁻ᵀ(xᵢ - x̄)/std] with an intercept), its leverage hᵢ = ||gᵢ||² and ωᵢ = eᵢ²/(1 - hᵢ)². A row of leverage 1
    leaves NaN for the coefficients it moves."""
    n = statistics.count
    intercept = len(mapping) == len(kept) + 1
    meat = torch.zeros(len(mapping), len(mapping), dtype=torch.float64)
    undefined = torch.zeros(len(mapping), dtype=torch.bool)
    spread = torch.linalg.vector_norm(mapping, dim=1)
    for features, targets in blocks:
        x, y = features.to("cpu", torch.float64), targets.reshape(-1).to("cpu", torch.float64)
        whitened = ((x[:, kept] - mean) / scale) @ inverse
        if intercept:
            whitened = torch.cat([torch.full((len(x), 1), 1 / math.sqrt(n), dtype=torch.float64), whitened], dim=1)
        leverage = (whitened**2).sum(dim=1)
        residual = y - x @ weight.nan_to_num(0.0) - bias
        one = leverage >= 1 - _LEVERAGE_ONE
        weights = torch.where(one, 0.0, residual**2 / (1 - leverage).clamp(min=_LEVERAGE_ONE) ** 2)
        meat += (whitened * weights.unsqueeze(-1)).T @ whitened
        if bool(one.any()):
            influence = (whitened[one] @ mapping.T).abs() / spread
            undefined |= (influence > _INFLUENCE).any(dim=0)
    errors = (mapping @ meat * mapping).sum(dim=1).clamp(min=0).sqrt()
    return torch.where(undefined, math.nan, errors)
