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
    """Input: a DataFrame of lead records. Output: probability, score, tier, factors per lead."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        explain = bool((params or {}).get("explain", True))
        return pd.DataFrame(lead_scoring_model.predict(self.model, model_input, explain=explain))


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
