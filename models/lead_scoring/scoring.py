"""The output every scorer shares: probability, 0-100 score, tier and (optionally) the top-3 factors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .factors import Factor

if TYPE_CHECKING:
    from .model import Scorer


TIERS = (("hot", 0.60), ("warm", 0.30), ("cold", 0.0))


def tier_of(probability: float) -> str:
    for name, threshold in TIERS:
        if probability >= threshold:
            return name
    return "cold"


def predict(
    scorer: Scorer,
    leads: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    explain: bool = True,
) -> list[dict[str, Any]]:
    """Score leads: probability, 0-100 score, tier and (optionally) the top-3 factors each."""
    probabilities = scorer.predict_proba(leads)
    _check_finite(probabilities)
    factors = scorer.explain(leads) if explain else [[] for _ in probabilities]
    return _results(probabilities, factors)


def _check_finite(probabilities: np.ndarray) -> None:
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("the model returned a non-finite probability")


def _results(probabilities: np.ndarray, factors: Sequence[Sequence[Factor]]) -> list[dict[str, Any]]:
    return [
        {
            "probability": round(float(p), 4),
            "score": round(100 * float(p)),
            "tier": tier_of(float(p)),
            "factors": [f.as_dict() for f in fs],
        }
        for p, fs in zip(probabilities, factors, strict=True)
    ]
