"""The monthly series: history validation, the seasonality test and indices, and the per-series
context the candidate models share."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from .config import ForecastConfig


FloatArray = npt.NDArray[np.float64]


def _to_monthly(history: pd.Series) -> tuple[FloatArray, pd.Period]:
    """Validate ``history`` and return its values and first month. Missing months are an error."""
    if not isinstance(history, pd.Series):
        raise TypeError(f"history must be a pandas Series indexed by month, got {type(history).__name__}")
    if len(history) == 0:
        raise ValueError("history is empty: at least one month of revenue is needed to forecast")
    index = history.index
    if isinstance(index, pd.PeriodIndex):
        if index.freqstr not in ("M", "ME"):
            raise ValueError(
                f"history has a PeriodIndex with frequency {index.freqstr!r}; monthly ('M') needed"
            )
        periods = index
    elif isinstance(index, pd.DatetimeIndex):
        stamps = index.tz_localize(None) if index.tz is not None else index
        off = stamps[(stamps.day != 1) | (stamps.normalize() != stamps)]
        if len(off):
            raise ValueError(
                "history must be indexed by month starts (day 1, midnight); "
                f"got {off[0]!s} (aggregate to months first)"
            )
        periods = stamps.to_period("M")
    else:
        raise ValueError(
            "history must have a DatetimeIndex of month starts or a monthly PeriodIndex, "
            f"got {type(index).__name__}"
        )
    if periods.has_duplicates:
        dup = periods[periods.duplicated()][0]
        raise ValueError(f"history has more than one value for month {dup}")
    values = pd.to_numeric(history, errors="coerce").to_numpy(dtype=float)
    order = np.argsort(periods.asi8, kind="stable")
    periods = periods[order]
    values = values[order]
    bad = ~np.isfinite(values)
    if bad.any():
        months = ", ".join(str(p) for p in periods[bad][:5])
        raise ValueError(f"history has missing or non-numeric values for {int(bad.sum())} month(s): {months}")
    expected = int(periods[-1].ordinal - periods[0].ordinal) + 1
    if expected != len(periods):
        present = set(periods.asi8.tolist())
        gaps = [
            str(pd.Period(ordinal=o, freq="M"))
            for o in range(int(periods[0].ordinal), int(periods[-1].ordinal) + 1)
            if o not in present
        ]
        raise ValueError(
            f"history is missing {len(gaps)} month(s) inside its range ({', '.join(gaps[:5])}"
            f"{', ...' if len(gaps) > 5 else ''}); add them explicitly (0 if there was no revenue)"
        )
    return values.astype(np.float64), periods[0]


def _acf(y: FloatArray, nlags: int) -> FloatArray:
    x = y - y.mean()
    den = float(x @ x)
    out = np.zeros(nlags + 1)
    out[0] = 1.0
    if den == 0:
        return out
    for k in range(1, nlags + 1):
        out[k] = float(x[k:] @ x[:-k]) / den
    return out


def _seasonality_test(y: FloatArray, m: int, z: float, alpha: float) -> bool:
    """Is there a yearly pattern? Either of two tests, on the first ``len(y)`` months.

    1. The M3 Theta method's test: the lag-``m`` autocorrelation exceeds ``z`` standard errors
       (Bartlett's formula).
    2. A one-way ANOVA of the detrended series (log ratio to the centred moving average when revenue
       is positive, the difference otherwise) by position in the season, at level ``alpha``. Test 1
       alone misses smooth seasonality on trending series of a few years (a growing business with a
       +-10% yearly swing over 48 months); test 2 catches it.
    """
    from scipy.special import fdtrc

    n = y.size
    if n < 2 * m or np.ptp(y) == 0:
        return False
    r = _acf(y, m)[1:]
    se = math.sqrt((1.0 + 2.0 * float(np.sum(r[:-1] ** 2))) / n)
    if abs(r[-1]) / se > z:
        return True
    trend, half = _centred_ma(y, m)
    core = y[half : half + trend.size]
    positive = bool(np.all(core > 0)) and bool(np.all(trend > 0))
    x = np.log(core / trend) if positive else core - trend
    pos = (np.arange(x.size) + half) % m
    counts = np.bincount(pos, minlength=m).astype(np.float64)
    dof_within = x.size - m
    if np.any(counts == 0) or dof_within < 4:
        return False
    means = np.bincount(pos, weights=x, minlength=m) / counts
    within = float(np.sum((x - means[pos]) ** 2))
    between = float(np.sum(counts * (means - x.mean()) ** 2))
    if within <= 0:
        return between > 0
    stat = (between / (m - 1)) / (within / dof_within)
    return bool(fdtrc(m - 1, dof_within, stat) < alpha)


def _centred_ma(y: FloatArray, m: int) -> tuple[FloatArray, int]:
    """Centred moving average over one season (2 x m for even m) and its offset into ``y``."""
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    return np.convolve(y, w, mode="valid"), (w.size - 1) // 2


def _classical_indices(y: FloatArray, m: int, multiplicative: bool) -> FloatArray | None:
    """Seasonal indices (position ``i`` = months ``i, i+m, ...`` of ``y``) of a classical decomposition."""
    if y.size < 2 * m:
        return None
    trend, half = _centred_ma(y, m)
    core = y[half : half + trend.size]
    if multiplicative:
        if np.any(trend <= 0):
            return None
        ratio = core / trend
    else:
        ratio = core - trend
    pos = (np.arange(trend.size) + half) % m
    sums = np.bincount(pos, weights=ratio, minlength=m)
    counts = np.bincount(pos, minlength=m)
    if np.any(counts == 0):
        return None
    idx = sums / counts
    if multiplicative:
        idx = idx / idx.mean()
        if idx.min() < 0.01:
            return None
    else:
        idx = idx - idx.mean()
    return np.asarray(idx, dtype=np.float64)


class _Context:
    """Per-series facts shared by the models: season, calendar, the full-history seasonality decision."""

    def __init__(self, y: FloatArray, first_month: pd.Period, config: ForecastConfig) -> None:
        self.y = y
        self.m = config.season_length
        self.first_month = first_month
        self.config = config
        self.positive = bool(np.all(y > 0))
        self.seasonal = _seasonality_test(y, self.m, config.seasonality_z, config.seasonality_alpha)
        self.multiplicative = self.positive
        self.max_fit_months = config.max_fit_months
        self._indices: dict[int, FloatArray | None] = {}
        self.full_indices = self._recent_indices(y.size) if self.seasonal else None
        if self.full_indices is None:
            self.seasonal = False

    def window_start(self, n: int) -> int:
        """First month (position) of the capped window of the first ``n`` months (``max_fit_months``)."""
        cap = self.max_fit_months
        return 0 if cap is None or n <= cap else n - cap

    def recent(self, y: FloatArray) -> tuple[FloatArray, int]:
        """The last ``max_fit_months`` of ``y`` (a prefix of the history) and where they start."""
        start = self.window_start(y.size)
        return y[start:], start

    def _recent_indices(self, n: int) -> FloatArray | None:
        """Indices of months ``0 .. n-1`` estimated on the capped window ending at month ``n``."""
        start = self.window_start(n)
        idx = _classical_indices(self.y[start:n], self.m, self.multiplicative)
        # position i of the window's indices is month start + i: realign to position 0 of the history
        return None if idx is None else np.roll(idx, start % self.m)

    def indices(self, n: int) -> FloatArray | None:
        """Seasonal indices estimated on the first ``n`` months (their last ``max_fit_months``), or the
        full-history ones if ``n`` is too short."""
        if not self.seasonal:
            return None
        if n not in self._indices:
            own = self._recent_indices(n)
            self._indices[n] = own if own is not None else self.full_indices
        return self._indices[n]

    def adjust(self, y: FloatArray) -> FloatArray:
        idx = self.indices(y.size)
        if idx is None:
            return y
        s = idx[np.arange(y.size) % self.m]
        return y / s if self.multiplicative else y - s

    def restore(self, fc: FloatArray, n: int) -> FloatArray:
        idx = self.indices(n)
        if idx is None:
            return fc
        s = idx[np.arange(n, n + fc.size) % self.m]
        return fc * s if self.multiplicative else fc + s

    def month_of_year(self, start: int, length: int) -> npt.NDArray[np.int64]:
        """Calendar month (0-11) of positions ``start .. start+length-1`` of the history."""
        first = self.first_month.month - 1
        return np.asarray((first + np.arange(start, start + length)) % 12, dtype=np.int64)
