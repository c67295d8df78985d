"""Servability: a registered version must load and answer the way the service loads it.

A version is loaded from the registry with the prediction service's own loader
(``predictor.load_servable``: ``models:/<name>/<version>`` through MLflow, unwrapped, compiled to
the serving path and smoke-tested) and scores the training holdout; its answers must equal the
training-time predictions to the precision the service answers with (probabilities and factor
impacts to 4 decimals, sentiment labels and scores, forecast points). A version that fails is
registered ``rejected`` with the exception as the reason and never gets an alias; ``rollout start``
refuses a version without ``servable=true``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from neuracrm_mlops.errors import NeuraCRMError

SERVABLE_TAG = "servable"
PRECISION = 4


class NotServableError(NeuraCRMError):
    """A registered version that cannot be loaded or answers differently from training."""


def _round(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else round(float(value), PRECISION)
    if isinstance(value, Mapping):
        return {str(k): _round(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


def jsonable_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the service receives them: JSON values (timestamps as ISO text, no NaN)."""
    text = frame.to_json(orient="records", date_format="iso", default_handler=str)
    records: list[dict[str, Any]] = json.loads(text)
    return records


def compare_answers(served: Sequence[Any], expected: Sequence[Any], *, what: str) -> None:
    """Raise NotServableError naming the first answer that differs (at the served precision)."""
    if len(served) != len(expected):
        raise NotServableError(f"{what}: {len(served)} answers for {len(expected)} inputs")
    for index, (got, want) in enumerate(zip(served, expected, strict=True)):
        if _round(got) != _round(want):
            raise NotServableError(
                f"{what}: answer {index + 1} differs from the training-time prediction: "
                f"served {str(_round(got))[:300]} vs trained {str(_round(want))[:300]}"
            )


def load_as_served(name: str, version: str) -> Any:
    """The version as the prediction service would serve it (raises what the service would raise)."""
    from neuracrm_mlops.inference.predictor import load_servable

    return load_servable(name, version)


def verify(name: str, version: str, answer: Callable[[Any], Sequence[Any]], expected: Sequence[Any]) -> None:
    """Load ``name`` v``version`` as served, answer the holdout with ``answer(servable)`` and compare
    with ``expected`` (the training-time predictions). Raises NotServableError with the cause."""
    try:
        servable = load_as_served(name, version)
    except Exception as exc:
        raise NotServableError(f"the service cannot load it: {type(exc).__name__}: {exc}") from exc
    try:
        served = answer(servable)
    except Exception as exc:
        raise NotServableError(
            f"loaded, but scoring the holdout failed: {type(exc).__name__}: {exc}"
        ) from exc
    compare_answers(served, expected, what=f"{name} v{version}")


def lead_answers(holdout: pd.DataFrame) -> Callable[[Any], Sequence[Any]]:
    """Scores (with factors) of the holdout leads as the service computes them."""
    records = jsonable_records(holdout)
    return lambda servable: servable.predict(records)


def sentiment_answers(texts: Sequence[str]) -> Callable[[Any], Sequence[Any]]:
    return lambda servable: servable.predict(list(texts))


def forecast_answers(horizons: Sequence[int]) -> Callable[[Any], Sequence[Any]]:
    from neuracrm_mlops.inference.predictor import forecast_output

    return lambda servable: [forecast_output(servable.predict(h)) for h in horizons]


def check_loadable(name: str, version: str) -> None:
    """Only that the version loads and answers its smoke test the way the service loads it (versions
    registered before the full check existed)."""
    try:
        load_as_served(name, version)
    except Exception as exc:
        raise NotServableError(f"the service cannot load it: {type(exc).__name__}: {exc}") from exc
