"""Sentiment on real text: the production model against a plain TF-IDF baseline and VADER (issue 13).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/sentiment_real_check.py [--seed 0]

Data: Financial PhraseBank, 50Agree (``../shared/datasets/financial_phrasebank``), mapped by
``real_datasets.phrasebank_interactions(seed)``: latin-1 decoded, duplicates and conflicting labels
dropped, a seeded stratified 20% (``holdout_ids``) dated after the rest; that 20% is the holdout
here (``training.time_split`` cuts by rounding and can differ from it by one row). Nothing is chosen
on the holdout: every model is fitted once on the other 80%.

- baseline: ``make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))``, scikit-learn defaults;
- VADER: ``VaderScorer()`` (the fallback) with the default ``SentimentConfig().vader_threshold``;
- model: ``sentiment_model.train`` with an unchanged ``SentimentConfig()``, as ``train_sentiment`` fits it.

Prints holdout accuracy, macro F1, training seconds (wall and CPU), and the model's single-text latency
(``model.predict([text])``, as the service calls it; median and p95 over 300 holdout texts).
Exit status 1 when the model misses baseline + 0.02.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import real_datasets
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from neuracrm_mlops.models import sentiment_model as sm

REQUIRED_GAIN = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified holdout")
    args = parser.parse_args()

    sentences = real_datasets.phrasebank_interactions(seed=args.seed)
    frame = sentences.interactions
    in_holdout = frame["interaction_id"].isin(sentences.holdout_ids)
    train_part, holdout = frame[~in_holdout], frame[in_holdout]
    texts, labels = list(train_part["text"]), list(train_part["sentiment_label"])
    test_texts, truth = list(holdout["text"]), list(holdout["sentiment_label"])
    print(f"Financial PhraseBank 50Agree, seed {args.seed}: {len(texts)} training, {len(test_texts)} holdout")
    print(f"holdout labels: {holdout['sentiment_label'].value_counts().to_dict()}")

    rows: list[tuple[str, float, float, tuple[float, float] | None]] = []

    clock = _Clock()
    baseline = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(texts, labels)
    baseline_seconds = clock.seconds()
    predicted = list(baseline.predict(test_texts))
    rows.append(("baseline TF-IDF + LR", *_scores(truth, predicted), baseline_seconds))

    vader = sm.VaderScorer(sm.SentimentConfig().vader_threshold)
    predicted = [p["label"] for p in sm.predict(vader, test_texts)]
    rows.append(("VADER (fallback)", *_scores(truth, predicted), None))

    sm.vader_features(["load the lexicon"])  # once per process, like the service's first request
    clock = _Clock()
    model = sm.train(texts, labels, sm.SentimentConfig())
    model_seconds = clock.seconds()
    results = sm.predict(model, test_texts)
    predicted = [p["label"] for p in results]
    rows.append((f"model ({model.kind})", *_scores(truth, predicted), model_seconds))

    print(f"\n{'':24s} {'accuracy':>9s} {'macro F1':>9s} {'train s':>8s} {'CPU s':>6s}")
    for name, accuracy, macro_f1, seconds in rows:
        shown = f"{seconds[0]:8.2f} {seconds[1]:6.2f}" if seconds is not None else f"{'-':>8s} {'-':>6s}"
        print(f"{name:24s} {accuracy:9.4f} {macro_f1:9.4f} {shown}")
    print(f"\nmodel selection (training part only): {model.selection}")

    scores = np.array([p["score"] for p in results])
    correct = np.array(predicted) == np.array(truth)
    print(
        f"mean score {scores.mean():.3f} vs accuracy {correct.mean():.3f}; "
        f"score>=0.8: {np.mean(scores >= 0.8):.0%} of texts, {correct[scores >= 0.8].mean():.3f} correct"
    )

    latencies = []
    for text in test_texts[:300]:
        started = time.perf_counter()
        model.predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    median, p95 = np.median(latencies), np.percentile(latencies, 95)
    print(f"single-text latency: median {median:.2f} ms, p95 {p95:.2f} ms")

    gain = rows[2][1] - rows[0][1]
    verdict = "meets" if gain >= REQUIRED_GAIN else "MISSES"
    print(f"model - baseline = {gain:+.4f} ({verdict} the required +{REQUIRED_GAIN})")
    return 0 if gain >= REQUIRED_GAIN else 1


class _Clock:
    """Wall and CPU seconds since creation (CPU time is steadier on a shared machine)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _scores(truth: list[str], predicted: list[str]) -> tuple[float, float]:
    return (
        float(accuracy_score(truth, predicted)),
        float(f1_score(truth, predicted, average="macro", labels=list(sm.LABELS))),
    )


if __name__ == "__main__":
    raise SystemExit(main())
