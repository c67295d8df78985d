"""Sentiment of customer interaction text: negative, neutral or positive, with a score.

- ``VaderScorer``: the VADER lexicon baseline (the ``vadersentiment`` package ships the lexicon);
  no training, always available, and the fallback.
- ``TfidfSentimentModel``: TF-IDF (words and bigrams) + multinomial logistic regression, trained
  once enough labelled interactions exist (``SentimentConfig.min_labelled``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LABELS = ("negative", "neutral", "positive")
MAX_TEXT_CHARS = 5_000


@dataclass(frozen=True)
class SentimentConfig:
    min_labelled: int = 300  # fewer labelled interactions: keep the VADER baseline
    min_per_class: int = 20
    ngram_max: int = 2
    min_df: int = 2
    c: float = 4.0
    vader_threshold: float = 0.05

    def as_params(self) -> dict[str, Any]:
        return dict(self.__dict__)


class VaderScorer:
    """VADER's compound score: >= t positive, <= -t negative, else neutral."""

    kind = "vader"

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self._analyzer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "_analyzer": None}

    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=float)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for compound in self._scores(texts):
            label = (
                "positive"
                if compound >= self.threshold
                else "negative"
                if compound <= -self.threshold
                else "neutral"
            )
            # score: confidence in the label, 0..1
            score = abs(compound) if label != "neutral" else 1 - abs(compound) / self.threshold / 2
            out.append(
                {
                    "label": label,
                    "score": round(float(min(1.0, max(0.0, score))), 4),
                    "compound": float(compound),
                }
            )
        return out


@dataclass
class TfidfSentimentModel:
    pipeline: Any
    config: SentimentConfig
    kind: str = "tfidf_logreg"

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        probabilities = self.pipeline.predict_proba(list(texts))
        classes = list(self.pipeline.classes_)
        out = []
        for row in probabilities:
            best = int(np.argmax(row))
            out.append(
                {
                    "label": classes[best],
                    "score": round(float(row[best]), 4),
                    "probabilities": {c: round(float(p), 4) for c, p in zip(classes, row, strict=True)},
                }
            )
        return out


def enough_labels(labels: Sequence[str | None], config: SentimentConfig) -> tuple[bool, str]:
    """Whether a classifier can be trained; the reason when not."""
    known = [label for label in labels if label in LABELS]
    if len(known) < config.min_labelled:
        return False, f"{len(known)} labelled interactions, fewer than the {config.min_labelled} needed"
    counts = {label: known.count(label) for label in LABELS}
    thin = [label for label, count in counts.items() if count < config.min_per_class]
    if thin:
        return False, f"too few examples of {', '.join(thin)} (need {config.min_per_class} each)"
    return True, f"{len(known)} labelled interactions"


def train(
    texts: Sequence[str], labels: Sequence[str], config: SentimentConfig | None = None
) -> TfidfSentimentModel:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    config = config or SentimentConfig()
    ok, reason = enough_labels(labels, config)
    if not ok:
        raise ValueError(f"cannot train a sentiment classifier: {reason}")
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, config.ngram_max), min_df=config.min_df, sublinear_tf=True),
        LogisticRegression(C=config.c, max_iter=1_000),
    )
    pipeline.fit([t[:MAX_TEXT_CHARS] for t in texts], list(labels))
    return TfidfSentimentModel(pipeline, config)


def predict(model: TfidfSentimentModel | VaderScorer, texts: Sequence[str]) -> list[dict[str, Any]]:
    return model.predict([t[:MAX_TEXT_CHARS] for t in texts])
