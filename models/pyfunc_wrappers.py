"""MLflow pyfunc wrappers: each family's fitted object saved as a joblib artifact, loadable by alias.

The serving layer may call ``unwrap_python_model().model`` to reach the family object directly and
skip pyfunc's per-call overhead; ``predict`` here is what ``mlflow models serve`` answers with.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from neuracrm_mlops.models import lead_scoring_model, sentiment_model


class _JoblibPyfunc(PythonModel):
    model: Any = None

    def load_context(self, context: Any) -> None:
        import joblib

        self.model = joblib.load(context.artifacts["model"])


class LeadScoringPyfunc(_JoblibPyfunc):
    """Input: lead records (a DataFrame, or a list of dicts / one dict; custom fields in an
    ``attributes`` dict). Params: ``explain`` (default true; false skips the top-3 factors).
    Output: one row per lead with ``probability`` (float), ``score`` (int), ``tier`` (str) and
    ``factors``: a list of ``{"group", "direction", "impact", "text"}`` dicts (empty without
    ``explain``), plain Python values throughout so that the answer serialises to JSON as it is."""

    OUTPUT_COLUMNS = ("probability", "score", "tier", "factors")
    _FALSE_TEXT = frozenset({"false", "0", "no", "n", "f", "off", ""})

    @classmethod
    def explain_param(cls, params: dict[str, Any] | None) -> bool:
        """The ``explain`` param (default true); text from a JSON request ("false", "0", ...) counts."""
        value = (params or {}).get("explain", True)
        if isinstance(value, str):
            return value.strip().lower() not in cls._FALSE_TEXT
        return bool(value)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # annotated as a DataFrame (what MLflow passes with this signature); records are taken too
        leads: Any = [model_input] if isinstance(model_input, dict) else model_input
        results = lead_scoring_model.predict(self.model, leads, explain=self.explain_param(params))
        rows = [
            {
                "probability": float(r["probability"]),
                "score": int(r["score"]),
                "tier": str(r["tier"]),
                "factors": [dict(f) for f in r["factors"]],
            }
            for r in results
        ]
        return pd.DataFrame(rows, columns=list(self.OUTPUT_COLUMNS))


class SentimentPyfunc(_JoblibPyfunc):
    """Input: a DataFrame with a ``text`` column. Output: label and score per text."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]
        return pd.DataFrame(sentiment_model.predict(self.model, texts))


class ForecastPyfunc(_JoblibPyfunc):
    """Input: a DataFrame with a ``months`` column (1..24). Output: one forecast per row."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        results = [self.model.predict(int(m)) for m in model_input["months"]]
        return pd.DataFrame([r.as_dict() if hasattr(r, "as_dict") else r.__dict__ for r in results])
