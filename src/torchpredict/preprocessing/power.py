"""The power transform: make skewed columns more Gaussian with a per-column exponent learned in training.

Power mirrors scikit-learn's PowerTransformer, whose exponents come from SciPy's maximum-likelihood
estimates (`stats.boxcox` / `stats.yeojohnson`). The optimizers SciPy uses for them (Brent's method
after a bracket search for Box-Cox, bounded Brent for Yeo-Johnson) are ported below so that fitting
needs only numpy and lands on the same exponents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.numeric import EPS, fit_values, refuse_rows, standard_statistics
from torchpredict.preprocessing.steps import NUMBERS, SCALES, Step, register_step, state_rules

__all__ = ["Power"]

Objective = Callable[[float], float]


@register_step
class Power(Step):
    """A Yeo-Johnson or Box-Cox transform per column, then standardization; ~ PowerTransformer.

    Box-Cox needs strictly positive values; Yeo-Johnson takes any. Without standardize,
    mean_ is 0 and scale_ is 1.
    """

    type = "power"
    state = state_rules(lambdas_=NUMBERS, mean_=NUMBERS, scale_=SCALES)
    methods = ("yeo-johnson", "box-cox")

    def __init__(self, columns: Sequence[str], *, method: str = "yeo-johnson", standardize: bool = True) -> None:
        if method not in self.methods:
            raise PreprocessingError(f"Power method must be 'yeo-johnson' or 'box-cox', got {method!r}")
        super().__init__(columns, method=method, standardize=bool(standardize))

    def fit(self, frame: pa.Table) -> Power:
        fitted = [self._fit_column(frame, n) for n in self.columns]
        self.lambdas_ = tuple(lmbda for lmbda, _, _ in fitted)
        self.mean_ = tuple(mean for _, mean, _ in fitted)
        self.scale_ = tuple(scale for _, _, scale in fitted)
        return self

    def _fit_column(self, frame: pa.Table, name: str) -> tuple[float, float, float]:
        x = self._checked(name, self.column_numbers(frame, name))
        present = fit_values(self, frame, name)
        if self.params["method"] == "box-cox":
            if np.all(present == present[0]):
                raise PreprocessingError(
                    f"{self!r}: column {name!r} is constant ({present[0]:g}); Box-Cox needs at least two "
                    "distinct values: drop the column or use method='yeo-johnson'"
                )
            lmbda = _box_cox_lambda(present)
        elif np.all(present == present[0]) or _constant_with_no_missing(x):
            # A constant column has no exponent to estimate: the likelihood is flat and the optimiser wanders
            # (lambda 73 for 2.0 repeated, whose power 1e33 then "standardizes" to ±1e17 of rounding noise).
            # scikit-learn keeps such columns as they are (lambda 1), though only when no value is missing;
            # here missing values do not change that, so the column standardizes to 0 like StandardScaler's.
            lmbda = 1.0
        else:
            lmbda = _yeo_johnson_lambda(present)
        if not self.params["standardize"]:
            return lmbda, 0.0, 1.0
        return (lmbda, *standard_statistics(self._power(present, lmbda)))

    def transform(self, frame: pa.Table) -> pa.Table:
        def one(i: int, x: np.ndarray) -> np.ndarray:
            y = self._power(self._checked(self.columns[i], x), self.lambdas_[i])
            return (y - self.mean_[i]) / self.scale_[i]

        return self._map(frame, one)

    def _power(self, x: np.ndarray, lmbda: float) -> np.ndarray:
        return box_cox(x, lmbda) if self.params["method"] == "box-cox" else yeo_johnson(x, lmbda)

    def _checked(self, name: str, x: np.ndarray) -> np.ndarray:
        if self.params["method"] == "box-cox":
            with np.errstate(invalid="ignore"):
                bad = x <= 0
            refuse_rows(
                self, name, x, bad, "expected values > 0 for Box-Cox", "use method='yeo-johnson' or shift the column"
            )
        return x


def box_cox(x: np.ndarray, lmbda: float) -> np.ndarray:
    """(x**lmbda - 1) / lmbda, log(x) at lmbda 0 (as scipy.special.boxcox computes it)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x) if abs(lmbda) < 1e-19 else np.expm1(lmbda * np.log(x)) / lmbda


def yeo_johnson(x: np.ndarray, lmbda: float) -> np.ndarray:
    """Box-Cox of 1 + x for x >= 0, mirrored (exponent 2 - lmbda) for x < 0; missing values stay missing."""
    out = np.full_like(x, np.nan)
    pos, neg = x >= 0, x < 0
    if abs(lmbda) < EPS:
        out[pos] = np.log1p(x[pos])
    else:
        out[pos] = np.expm1(lmbda * np.log1p(x[pos])) / lmbda
    if abs(lmbda - 2) > EPS:
        out[neg] = -np.expm1((2 - lmbda) * np.log1p(-x[neg])) / (2 - lmbda)
    else:
        out[neg] = -np.log1p(-x[neg])
    return out


def _constant_with_no_missing(x: np.ndarray) -> bool:
    """scikit-learn's test on the whole column: a missing value makes its mean NaN, hence "not constant"."""
    n, mean, var = len(x), float(np.mean(x)), float(np.var(x))
    return var <= n * EPS * var + (n * mean * EPS) ** 2


def _box_cox_lambda(x: np.ndarray) -> float:
    """scipy.stats.boxcox_normmax(x, method='mle'): Brent's method from the bracket (-2, 2)."""
    logx = np.log(x)
    n, total = len(x), logx.sum()

    def negative_log_likelihood(lmbda: float) -> float:
        # log var(box_cox(x)) = log var(x**lmbda) - log lmbda**2, in log space: large exponents cannot overflow
        log_var = np.log(np.var(logx)) if lmbda == 0 else _log_var(lmbda * logx) - 2 * math.log(abs(lmbda))
        return float(-((lmbda - 1) * total - n / 2 * log_var))

    return _brent(negative_log_likelihood, -2.0, 2.0)


def _log_var(logx: np.ndarray) -> float:
    """log(var(exp(logx))) without leaving log space, operation for operation as SciPy computes it."""
    log_n = math.log(len(logx))
    log_mean = _log_sum_exp(logx) - log_n
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        high, low = np.maximum(logx, log_mean), np.minimum(logx, log_mean)
        log_deviation = np.log1p(-np.exp(low - high)) + high  # log |x - mean|
        bad = ~np.isfinite(log_deviation)
        log_deviation[bad] = np.log(np.abs(np.exp(logx[bad]) - np.exp(log_mean)))
    return _log_sum_exp(2 * log_deviation) - log_n


def _log_sum_exp(a: np.ndarray) -> float:
    """scipy.special.logsumexp of a 1-D array: shift by the maximum, count the maxima apart."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = a.max()
        at_top = a == top
        count = at_top.sum(dtype=np.float64)
        rest = np.exp(np.where(at_top, -np.inf, a) - top).sum()
        out = np.log1p(rest if rest == 0 else rest / count) + np.log(count) + top
        return float(out if np.isfinite(out) else np.log(np.exp(a).sum()))


def _yeo_johnson_lambda(x: np.ndarray) -> float:
    """scipy.stats.yeojohnson_normmax(x): bounded Brent between exponents that keep the transform finite."""
    if np.all(x == 0):
        return 1.0
    signed_log = float((np.sign(x) * np.log1p(np.abs(x))).sum())
    n, info = len(x), np.finfo(np.float64)

    def negative_log_likelihood(lmbda: float) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            var = float(np.var(yeo_johnson(x, lmbda)))
        log_var = math.log(var) if var >= info.tiny else -math.inf
        llf = -n / 2 * log_var + (lmbda - 1) * signed_log
        return math.inf if math.isinf(llf) else -llf

    log1p_max = math.log1p(20 * float(np.abs(x).max()))
    low = (math.log(info.tiny) - math.log(EPS)) / 2 / log1p_max
    high = (math.log(info.max) + math.log(EPS)) / 2 / log1p_max
    if np.all(x < 0):
        low, high = 2 - high, 2 - low
    elif np.any(x < 0):
        low, high = max(2 - high, low), min(2 - low, high)
    with np.errstate(invalid="ignore"):  # where the likelihood is infinite, as SciPy does
        return _bounded_brent(negative_log_likelihood, low, high, xtol=1.48e-8)


def _bracket(f: Objective, xa: float, xb: float) -> tuple[float, float, float, float, float, float]:
    """scipy.optimize.bracket: walk downhill from (xa, xb) until a middle point lies below both ends."""
    gold, tiny, grow_limit = 1.618034, 1e-21, 110.0
    fa, fb = f(xa), f(xb)
    if fa < fb:
        xa, xb, fa, fb = xb, xa, fb, fa
    xc = xb + gold * (xb - xa)
    fc = f(xc)
    for _ in range(1001):
        if not fc < fb:
            break
        tmp1, tmp2 = (xb - xa) * (fb - fc), (xb - xc) * (fb - fa)
        val = tmp2 - tmp1
        denom = 2.0 * tiny if abs(val) < tiny else 2.0 * val
        w = xb - ((xb - xc) * tmp2 - (xb - xa) * tmp1) / denom
        wlim = xb + grow_limit * (xc - xb)
        if (w - xc) * (xb - w) > 0.0:
            fw = f(w)
            if fw < fc:
                xa, xb, fa, fb = xb, w, fb, fw
                break
            if fw > fb:
                xc, fc = w, fw
                break
            w = xc + gold * (xc - xb)
            fw = f(w)
        elif (w - wlim) * (wlim - xc) >= 0.0:
            w = wlim
            fw = f(w)
        elif (w - wlim) * (xc - w) > 0.0:
            fw = f(w)
            if fw < fc:
                xb, xc, w = xc, w, w + gold * (w - xc)
                fb, fc, fw = fc, fw, f(w)
        else:
            w = xc + gold * (xc - xb)
            fw = f(w)
        xa, xb, xc, fa, fb, fc = xb, xc, w, fb, fc, fw
    ok = ((fb < fc and fb <= fa) or (fb < fa and fb <= fc)) and (xa < xb < xc or xc < xb < xa)
    if not (ok and all(map(math.isfinite, (xa, xb, xc)))):
        raise PreprocessingError("Box-Cox: no exponent maximises the likelihood (the search found no bracket)")
    return xa, xb, xc, fa, fb, fc


def _brent(f: Objective, xa: float, xb: float, tol: float = 1.48e-8, maxiter: int = 500) -> float:
    """scipy.optimize.brent(f, brack=(xa, xb)): parabolic interpolation with golden-section fallback."""
    xa, xb, xc, _, fb, _ = _bracket(f, xa, xb)
    x = w = v = xb
    fx = fw = fv = fb
    a, b = min(xa, xc), max(xa, xc)
    deltax = rat = 0.0
    for _ in range(maxiter):
        tol1 = tol * abs(x) + 1.0e-11
        tol2, xmid = 2.0 * tol1, 0.5 * (a + b)
        if abs(x - xmid) < tol2 - 0.5 * (b - a):
            break
        if abs(deltax) <= tol1:
            deltax = (a if x >= xmid else b) - x
            rat = 0.3819660 * deltax
        else:
            tmp1, tmp2 = (x - w) * (fx - fv), (x - v) * (fx - fw)
            p, tmp2 = (x - v) * tmp2 - (x - w) * tmp1, 2.0 * (tmp2 - tmp1)
            p, tmp2 = (-p if tmp2 > 0.0 else p), abs(tmp2)
            dx_temp, deltax = deltax, rat
            if p > tmp2 * (a - x) and p < tmp2 * (b - x) and abs(p) < abs(0.5 * tmp2 * dx_temp):
                rat = p * 1.0 / tmp2
                u = x + rat
                if (u - a) < tol2 or (b - u) < tol2:
                    rat = tol1 if xmid - x >= 0 else -tol1
            else:
                deltax = (a if x >= xmid else b) - x
                rat = 0.3819660 * deltax
        u = (x + tol1 if rat >= 0 else x - tol1) if abs(rat) < tol1 else x + rat
        fu = f(u)
        if fu > fx:
            a, b = (u, b) if u < x else (a, u)
            if fu <= fw or w == x:
                v, w, fv, fw = w, u, fw, fu
            elif fu <= fv or v in (x, w):
                v, fv = u, fu
        else:
            a, b = (x, b) if u >= x else (a, x)
            v, w, x, fv, fw, fx = w, x, u, fw, fx, fu
    return float(x)


def _bounded_brent(f: Objective, lower: float, upper: float, xtol: float, maxfun: int = 500) -> float:
    """scipy.optimize.fminbound: Brent's method confined to [lower, upper]."""
    sqrt_eps, golden = math.sqrt(2.2e-16), 0.5 * (3.0 - math.sqrt(5.0))
    a, b = lower, upper
    fulc = nfc = xf = a + golden * (b - a)
    rat = e = 0.0
    fx = ffulc = fnfc = f(xf)
    num, xm = 1, 0.5 * (a + b)
    tol1 = sqrt_eps * abs(xf) + xtol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > tol2 - 0.5 * (b - a):
        use_golden = True
        if abs(e) > tol1:
            use_golden = False
            r, q = (xf - nfc) * (fx - ffulc), (xf - fulc) * (fx - fnfc)
            p, q = (xf - fulc) * q - (xf - nfc) * r, 2.0 * (q - r)
            p, q = (-p if q > 0.0 else p), abs(q)
            r, e = e, rat
            if abs(p) < abs(0.5 * q * r) and p > q * (a - xf) and p < q * (b - xf):
                rat = (p + 0.0) / q
                x = xf + rat
                if (x - a) < tol2 or (b - x) < tol2:
                    rat = tol1 * (np.sign(xm - xf) + ((xm - xf) == 0))
            else:
                use_golden = True
        if use_golden:
            e = (a if xf >= xm else b) - xf
            rat = golden * e
        x = xf + (np.sign(rat) + (rat == 0)) * max(abs(rat), tol1)
        fu = f(x)
        num += 1
        if fu <= fx:
            a, b = (xf, b) if x >= xf else (a, xf)
            fulc, ffulc, nfc, fnfc, xf, fx = nfc, fnfc, xf, fx, x, fu
        else:
            a, b = (x, b) if x < xf else (a, x)
            if fu <= fnfc or nfc == xf:
                fulc, ffulc, nfc, fnfc = nfc, fnfc, x, fu
            elif fu <= ffulc or fulc in (xf, nfc):
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = sqrt_eps * abs(xf) + xtol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxfun:
            break
    return float(xf)
