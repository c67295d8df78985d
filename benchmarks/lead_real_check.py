"""The production lead model on real CRM-like data: UCI Bank Marketing, against plain scikit-learn.

    nice -n 10 .venv/bin/python benchmarks/lead_real_check.py                  # all 41,188 calls
    nice -n 10 .venv/bin/python benchmarks/lead_real_check.py --limit 8000     # the first 8,000, quick
    nice -n 10 .venv/bin/python benchmarks/lead_real_check.py --json bank.json

Data: ``real_datasets.bank_leads()`` (``../shared/datasets/bank_marketing``, read at run time): one
lead per call in the documented ``leads`` import format, in time order (May 2008 .. Nov 2010).
``job_title`` and ``source`` are documented lead fields; every other column is unknown to the CRM, so
it is passed the way the CRM stores it: in an ``attributes`` dict per lead, numbers parsed as numbers
(``ingest.coerce_attribute``, what ``import`` does). No company, engagement, urgency, industry or text
field exists. Split: time-ordered, the first ``1 - --holdout-share`` (default 80%) train, the rest test.

Platform: ``lead_scoring_model.train(train_part, y, LeadModelConfig())``, what ``train_lead_scoring``
fits; its feature notes are printed. Fallbacks: ``RuleScorer.fit`` (the six factor scores calibrated on
the training part), ``RuleScorer()`` (hand weights), the training base rate, and which of them
``fit_fallback`` would serve (fitted rules when their ROC AUC on the test part is >= 0.55).

Baselines, fitted on the same training rows and the same raw columns
(``real_datasets.bank_raw_features``: numbers as numbers, text as categories, nothing engineered):
- ``LogisticRegression(max_iter=1000)`` on one-hot categories (missing as its own category) and
  standard-scaled numbers (median-imputed);
- ``HistGradientBoostingClassifier(random_state=0)`` with native categories, both ways scikit-learn
  offers: ``categorical_features="from_dtype"`` (pandas categories) and ordinal-encoded columns.

Reported: ROC AUC on the test part for all of them, accuracy at 0.5, Brier score, the model minus the
better baseline, training seconds, and a check that the lean serving path answers the test leads
exactly like ``predict`` (factors included). Progress goes to stderr, the markdown report to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_datasets

from neuracrm_mlops.models import lead_scoring_model as lsm


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "accuracy": float(np.mean((p >= 0.5) == y)),
        "brier": float(brier_score_loss(y, p)),
        "mean_p": float(np.mean(p)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    say("reading bank marketing")
    raw = real_datasets.bank_leads(args.limit)
    cut = round(len(raw) * (1 - args.holdout_share))
    raw_train, raw_test = raw.iloc[:cut].reset_index(drop=True), raw.iloc[cut:].reset_index(drop=True)
    leads = real_datasets.bank_as_crm_leads(raw)
    train_part, test_part = leads.iloc[:cut].reset_index(drop=True), leads.iloc[cut:].reset_index(drop=True)
    y_train = train_part["converted"].astype(int).to_numpy()
    y_test = test_part["converted"].astype(int).to_numpy()
    say(f"{len(train_part):,} training leads, {len(test_part):,} test leads")

    probabilities: dict[str, np.ndarray] = {}
    say("training the production model (LeadModelConfig())")
    started, cpu = time.perf_counter(), time.process_time()
    model = lsm.train(train_part, y_train, lsm.LeadModelConfig())
    train_seconds, train_cpu = time.perf_counter() - started, time.process_time() - cpu
    probabilities["model"] = model.predict_proba(test_part)

    say("fallbacks: fitted rules, hand rules, base rate")
    fitted_rules = lsm.RuleScorer.fit(train_part, y_train)
    probabilities["fitted rules (RuleScorer.fit)"] = fitted_rules.predict_proba(test_part)
    probabilities["hand rules (RuleScorer())"] = lsm.RuleScorer().predict_proba(test_part)
    probabilities["base rate"] = np.full(len(test_part), y_train.mean())
    fallback = lsm.fit_fallback(train_part, y_train, test_part, y_test)

    probabilities |= real_datasets.bank_baseline_probabilities(raw_train, raw_test, y_train)

    say("lean serving path vs predict on the test leads")
    from neuracrm_mlops.training.servability import jsonable_records

    started = time.perf_counter()
    lean = lsm.compile_scorer(model)
    compile_seconds = time.perf_counter() - started
    requests = jsonable_records(test_part)
    started = time.perf_counter()
    served = lean.predict(requests)
    lean_seconds = time.perf_counter() - started
    started = time.perf_counter()
    expected = lsm.predict(model, test_part)
    predict_seconds = time.perf_counter() - started

    quality = {}
    for name, p in probabilities.items():
        quality[name] = metrics(y_test, p) if np.ptp(p) > 0 else {**metrics(y_test, p), "roc_auc": 0.5}
    baseline_names = [n for n in quality if n.startswith(("LogisticRegression", "HistGradientBoosting"))]
    best_baseline = max(baseline_names, key=lambda n: quality[n]["roc_auc"])
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "data": {
            "rows": len(raw),
            "train_leads": len(train_part),
            "test_leads": len(test_part),
            "train_from": str(train_part["created_at"].iloc[0])[:10],
            "train_to": str(train_part["created_at"].iloc[-1])[:10],
            "test_from": str(test_part["created_at"].iloc[0])[:10],
            "test_to": str(test_part["created_at"].iloc[-1])[:10],
            "train_positive_rate": float(y_train.mean()),
            "test_positive_rate": float(y_test.mean()),
        },
        "quality": quality,
        "best_baseline": best_baseline,
        "model_minus_best_baseline": quality["model"]["roc_auc"] - quality[best_baseline]["roc_auc"],
        "fallback": {
            "kind": fallback.kind,
            "fitted_rules_weights": fitted_rules.weights,
            "groups_without_inputs": list(fitted_rules.groups_without_inputs),
        },
        "feature_notes": model.feature_notes,
        "timings": {
            "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu,
            "compile_seconds": compile_seconds,
            "lean_predict_seconds": lean_seconds,
            "pandas_predict_seconds": predict_seconds,
        },
        "lean_equals_predict": served == expected,
    }


def render(result: dict[str, Any], command: str) -> str:
    data, q = result["data"], result["quality"]
    lines = [
        f"Command: `{command}`. Date: {result['date']}, Python {result['python']}.",
        "",
        f"Data: UCI Bank Marketing as CRM leads, {data['rows']:,} calls. Time-ordered split: train "
        f"{data['train_leads']:,} leads ({data['train_from']} .. {data['train_to']}, positive rate "
        f"{data['train_positive_rate']:.3f}), test {data['test_leads']:,} leads ({data['test_from']} .. "
        f"{data['test_to']}, positive rate {data['test_positive_rate']:.3f}).",
        "",
        "| scorer | ROC AUC | accuracy@0.5 | Brier | mean p |",
        "|---|---|---|---|---|",
    ]
    for name, m in q.items():
        label = f"**{name}**" if name == "model" else name
        lines.append(
            f"| {label} | {m['roc_auc']:.4f} | {m['accuracy']:.3f} | {m['brier']:.3f} | {m['mean_p']:.3f} |"
        )
    t = result["timings"]
    lines += [
        "",
        f"Model minus the better baseline ({result['best_baseline']}): ROC AUC "
        f"{result['model_minus_best_baseline']:+.4f}.",
        f"Fallback `fit_fallback` would serve: {result['fallback']['kind']} (fitted rule weights "
        + ", ".join(f"{g} {w:+.2f}" for g, w in result["fallback"]["fitted_rules_weights"].items())
        + f"; groups without inputs: {', '.join(result['fallback']['groups_without_inputs']) or 'none'}).",
        f"Training {t['train_seconds']:.1f} s wall ({t['train_cpu_seconds']:.1f} s CPU); compile_scorer "
        f"{t['compile_seconds']:.2f} s; the {data['test_leads']:,} test leads with factors: lean "
        f"{t['lean_predict_seconds']:.2f} s, predict() {t['pandas_predict_seconds']:.2f} s; lean answers "
        f"equal predict(): {result['lean_equals_predict']}.",
        "",
        "Feature notes (`model.feature_notes`):",
        *[f"- {note}" for note in result["feature_notes"]],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N calls (default: all)")
    parser.add_argument(
        "--holdout-share", type=float, default=0.2, help="newest share held out (default 0.2)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args)
    result["total_seconds"] = time.perf_counter() - started
    print(render(result, " ".join(["python", "benchmarks/lead_real_check.py", *(argv or sys.argv[1:])])))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
