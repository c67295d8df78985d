"""Deliberately broken lead scorers, registered in MLflow by the serving tests (importable by the
server subprocess, which gets this directory on PYTHONPATH)."""

from __future__ import annotations

import math
from typing import Any

EXPLODE_INDUSTRY = "__explode__"
NAN_INDUSTRY = "__nan__"


class FlakyLeadScorer:
    """Passes the load-time smoke test; raises on one industry and answers NaN on another."""

    def predict(self, records: list[dict[str, Any]], explain: bool = True) -> list[dict[str, Any]]:
        industries = {record.get("industry") for record in records}
        if EXPLODE_INDUSTRY in industries:
            raise RuntimeError("simulated model crash")
        return [
            {
                "probability": math.nan if record.get("industry") == NAN_INDUSTRY else 0.5,
                "score": 50,
                "tier": "warm",
                "factors": [],
            }
            for record in records
        ]


class UnloadableLeadScorer:
    """Fails the load-time smoke test: every prediction raises."""

    def predict(self, records: list[dict[str, Any]], explain: bool = True) -> list[dict[str, Any]]:
        raise RuntimeError("this model cannot score anything")


class ConstantSentiment:
    """A sentiment 'model' that answers one label for every text (worse than VADER on real data)."""

    kind = "constant"

    def __init__(self, label: str = "positive") -> None:
        self.label = label

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return [{"label": self.label, "score": 1.0} for _ in texts]


class BreaksOnLoadSentiment(ConstantSentiment):
    """Scores in the training process, but cannot be unpickled: what the service would meet."""

    kind = "breaks_on_load"

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError("this model's artifact cannot be loaded")
