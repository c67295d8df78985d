"""The ``backtest.svg`` chart logged with every forecast version: the history, the ensemble forecast
and its 80% / 95% bands, titled with the backtest accuracy (MLflow's artifact view shows SVG).

Written as SVG text rather than drawn with matplotlib: at 1,000 organizations a run, matplotlib's
figure, text layout and PNG encoding cost 80-250 ms an organization, more than any model but
Prophet; this costs about a millisecond and makes a ~6 KB file.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

WIDTH, HEIGHT = 520, 340
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 34, 40
BLUE = "#1f77b4"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"chart range must be finite, got [{low}, {high}]")
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [math.floor(low / step) * step]
    while ticks[-1] < high:
        ticks.append(ticks[0] + step * len(ticks))
    return [round(tick, 10) for tick in ticks]


def _label(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:,.0f}"


def _points(xs: Sequence[float], ys: Sequence[float]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def backtest_svg(
    history_months: Sequence[dt.date],
    history: Sequence[float],
    forecast_months: Sequence[dt.date],
    point: Sequence[float],
    lower_80: Sequence[float],
    upper_80: Sequence[float],
    lower_95: Sequence[float],
    upper_95: Sequence[float],
    title: str,
) -> str:
    """The chart as an SVG document; months are first days of consecutive months."""
    if not history_months or not forecast_months:
        raise ValueError("a backtest chart needs at least one month of history and one of forecast")
    start = history_months[0]

    def month_index(month: dt.date) -> int:
        return (month.year - start.year) * 12 + month.month - start.month

    last = month_index(forecast_months[-1])
    values = [*history, *lower_95, *upper_95, *point]
    ticks = nice_ticks(min(0.0, *values), max(values))
    low, high = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(month: dt.date) -> float:
        return LEFT + plot_w * month_index(month) / max(1, last)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    fx = [x(m) for m in forecast_months]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2:.0f}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_label(tick)}</text>'
        )
    years = range(start.year + (start.month > 1), forecast_months[-1].year + 1)
    every = max(1, math.ceil(len(years) / 8))
    for year in years[::every]:
        tx = x(dt.date(year, 1, 1))
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" stroke="#555"/>'
            f'<text x="{tx:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{year}</text>'
        )
    parts += [
        f'<text transform="translate(14 {TOP + plot_h / 2:.0f}) rotate(-90)" '
        'text-anchor="middle">revenue</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#555"/>',
        f'<polygon fill="{BLUE}" fill-opacity="0.15" points="'
        f'{_points(fx + fx[::-1], [y(v) for v in [*upper_95, *reversed(lower_95)]])}"/>',
        f'<polygon fill="{BLUE}" fill-opacity="0.3" points="'
        f'{_points(fx + fx[::-1], [y(v) for v in [*upper_80, *reversed(lower_80)]])}"/>',
        f'<polyline fill="none" stroke="black" stroke-width="1" points="'
        f'{_points([x(m) for m in history_months], [y(v) for v in history])}"/>',
        f'<polyline fill="none" stroke="{BLUE}" stroke-width="1.5" points="'
        f'{_points(fx, [y(v) for v in point])}"/>',
    ]
    legend = [
        ("actual", "black", 1.0),
        ("ensemble forecast", BLUE, 1.0),
        ("80%", BLUE, 0.3),
        ("95%", BLUE, 0.15),
    ]
    for row, (name, color, opacity) in enumerate(legend):
        ly = TOP + 12 + 14 * row
        mark = (
            f'<line x1="{LEFT + 8}" x2="{LEFT + 26}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
            if opacity == 1.0
            else f'<rect x="{LEFT + 8}" y="{ly - 9}" width="18" height="9" fill="{color}" '
            f'fill-opacity="{opacity}"/>'
        )
        parts.append(f'{mark}<text x="{LEFT + 32}" y="{ly}" font-size="10">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def save_backtest_chart(path: Path, history: pd.Series, fitted: Any) -> Path:
    """Write the chart of a fitted forecaster (``models.forecasting_model.FittedForecaster``) and the
    monthly history (PeriodIndex) it was fitted on."""
    result = fitted.predict(fitted.max_horizon)
    backtest = fitted.backtest
    accuracy = f"{backtest.ensemble.accuracy:.3f}" if backtest.ensemble else "n/a"
    months = [p.to_timestamp().date() for p in pd.PeriodIndex(history.index, freq="M")]
    svg = backtest_svg(
        months,
        [float(v) for v in history.to_numpy()],
        list(result.months),
        result.point,
        result.lower_80,
        result.upper_80,
        result.lower_95,
        result.upper_95,
        f"backtest accuracy {accuracy} ({backtest.chain_used})",
    )
    path.write_text(svg, encoding="utf-8")
    return path
