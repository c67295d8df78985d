"""Real data end to end: the three public datasets through import, validation, training, rollout and a
running ``bentoml serve``, scored over HTTP on data the models never saw, beside baselines fitted in
the same run.

    .venv/bin/python benchmarks/real_data.py [--series N] [--json FILE] [--keep DIR]
    (or: neuracrm-mlops bench real-data [-- OPTIONS])

Datasets (``../shared/datasets``, mapped by ``benchmarks/real_datasets.py``, read at run time):
- Bank Marketing -> leads of one organization; the test set is the time-ordered last 20% (the
  platform's own time-based holdout). Served metric: ROC AUC of the served probabilities. Baselines on
  the same raw columns (``duration`` never used), fitted on the first 80%: scikit-learn
  LogisticRegression (one-hot + scaling) and HistGradientBoostingClassifier.
- Financial PhraseBank -> labelled interactions of one organization; the test set is a seeded
  stratified 20% (dated last, so it is the platform's holdout). Served metric: accuracy. Baselines:
  TF-IDF + LogisticRegression (scikit-learn defaults) and VADER.
- ABS retail turnover -> one organization per series (``--series``, all 152 by default); the last 24
  months of each series are held back (not imported). Served metric: mean MASE of ``/forecast`` for 24
  months (scaled by the in-sample seasonal-naive error). Baselines: seasonal naive, statsmodels ETS
  and Theta (``benchmarks/forecast_baselines.py``).

Everything runs on a fresh store under a temp NEURACRM_HOME (SQLite, local MLflow): the organizations
and imports through the library calls behind ``neuracrm-mlops import`` (the CLI would start one
process per retail series), then the CLI for validation (warnings counted), ``train`` and
``rollout ... start``, then ``bentoml serve`` on a free port. Floors are the defaults (0.80).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import forecast_baselines  # noqa: E402
import real_datasets  # noqa: E402

HOLDOUT_SHARE = 0.2
RETAIL_TEST_MONTHS = 24


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    say("neuracrm-mlops " + " ".join(args))
    result = subprocess.run(
        [str(BIN / "neuracrm-mlops"), *args], check=False, env=env, capture_output=True, text=True, cwd=REPO
    )
    if check and result.returncode not in (0, 3):
        raise SystemExit(f"`neuracrm-mlops {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
    return result


def warnings_in(output: str) -> int:
    return len(re.findall(r"FAILED \[warning\]", output))


# -- store ---------------------------------------------------------------------------------------


def build_store(home: Path, series_count: int) -> dict[str, Any]:
    """Organizations, imports (summaries kept) and the held-back test data."""
    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.migrate import upgrade
    from neuracrm_mlops.store.ingest import import_file
    from neuracrm_mlops.store.orgs import create_organization

    engine = get_engine()
    upgrade(engine)
    files = home / "files"
    keys: dict[str, str] = {}
    ids: dict[str, int] = {}

    def org(name: str) -> int:
        with engine.begin() as conn:
            ref, key = create_organization(conn, name)
        keys[name], ids[name] = key, ref.id
        return ref.id

    imports: dict[str, dict[str, int]] = {}

    def record(family: str, summary: Any) -> None:
        row = imports.setdefault(family, {"rows": 0, "imported": 0, "field_errors": 0, "quarantined": 0})
        row["rows"] += summary.rows_read
        row["imported"] += summary.imported + summary.updated + summary.unchanged
        row["field_errors"] += summary.with_field_errors
        row["quarantined"] += summary.quarantined

    say("bank marketing -> leads")
    leads = real_datasets.bank_leads()
    record("bank", import_file(real_datasets.write_csv(leads, files / "bank.csv"), "leads", org("bank")))
    say("financial phrasebank -> interactions")
    sentences = real_datasets.phrasebank_interactions(seed=0, holdout_share=HOLDOUT_SHARE)
    path = real_datasets.write_csv(sentences.interactions, files / "phrasebank.csv")
    record("phrasebank", import_file(path, "interactions", org("phrasebank")))
    say(f"retail turnover -> sales of {series_count} organizations")
    series = dict(list(real_datasets.retail_series().items())[:series_count])
    tests: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for series_id, frame in series.items():
        history, test = real_datasets.split_last(frame, RETAIL_TEST_MONTHS)
        path = real_datasets.write_csv(history, files / "retail" / f"{series_id}.csv")
        record("retail", import_file(path, "sales", org(f"retail-{series_id}")))
        tests[series_id] = (history["revenue"].to_numpy(float), test["revenue"].to_numpy(float))
    return {
        "keys": keys,
        "ids": ids,
        "imports": imports,
        "leads": leads,
        "sentences": sentences,
        "retail": tests,
    }


# -- baselines -----------------------------------------------------------------------------------


def bank_baselines(leads: pd.DataFrame) -> dict[str, float]:
    """ROC AUC on the time-ordered last 20% of the scikit-learn baselines fitted on the first 80%."""
    from sklearn.metrics import roc_auc_score

    ordered = leads.sort_values("created_at", kind="stable").reset_index(drop=True)
    cut = round(len(ordered) * (1 - HOLDOUT_SHARE))
    y = (ordered["converted"] == "true").to_numpy(int)
    probabilities = real_datasets.bank_baseline_probabilities(ordered.iloc[:cut], ordered.iloc[cut:], y[:cut])
    return {name: float(roc_auc_score(y[cut:], p)) for name, p in probabilities.items()}


def phrasebank_baselines(sentences: Any) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from neuracrm_mlops.models.sentiment_model import VaderScorer

    frame = sentences.interactions
    test = frame["interaction_id"].isin(sentences.holdout_ids)
    train, hold = frame[~test], frame[test]
    tfidf = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    tfidf.fit(train["text"], train["sentiment_label"])
    vader = VaderScorer()
    vader_labels = [r["label"] for r in vader.predict(list(hold["text"]))]
    return {
        "TF-IDF + LogisticRegression": float((tfidf.predict(hold["text"]) == hold["sentiment_label"]).mean()),
        "VADER": float((np.array(vader_labels) == hold["sentiment_label"].to_numpy()).mean()),
    }


def retail_baselines(tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    out: dict[str, list[float]] = {"seasonal naive": [], "ETS": [], "Theta": []}
    for history, actual in tests.values():
        h = len(actual)
        for name, forecast in (
            ("seasonal naive", forecast_baselines.seasonal_naive),
            ("ETS", forecast_baselines.ets),
            ("Theta", forecast_baselines.theta),
        ):
            out[name].append(forecast_baselines.mase(actual, forecast(history, h), history))
    return {name: float(np.mean(values)) for name, values in out.items()}


# -- serving -------------------------------------------------------------------------------------


def serve(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from neuracrm_mlops.ops.local_stack import free_port

    port = free_port()
    log = (workdir / "bentoml.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "neuracrm_mlops.serving.service:PredictionService",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bentoml serve exited ({process.returncode}); see {workdir / 'bentoml.log'}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("bentoml serve was not ready within 240 s")


DOCUMENTED_LEAD_FIELDS = (
    "industry", "company_employees", "company_revenue", "email_opens", "website_visits", "pages_viewed",
    "time_on_site_seconds", "days_since_last_activity", "job_title", "seniority", "timeline",
    "budget_signal", "description", "source", "region",
)  # fmt: skip


def _lead_payload(row: dict[str, Any]) -> dict[str, Any]:
    lead: dict[str, Any] = {"lead_id": row["external_id"]}
    for name in DOCUMENTED_LEAD_FIELDS:
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            lead[name] = value
    lead["attributes"] = {
        k: v for k, v in (row.get("attributes") or {}).items() if not str(k).startswith("_")
    }
    return lead


def score_bank(base: str, key: str, org_id: int, routes: dict[str, int]) -> float:
    import sqlalchemy as sa
    from sklearn.metrics import roc_auc_score

    from neuracrm_mlops.store.db.engine import get_engine
    from neuracrm_mlops.store.db.schema import Lead

    with get_engine().connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                sa.select(Lead).where(Lead.organization_id == org_id).order_by(Lead.created_at, Lead.id)
            ).mappings()
        ]
    test = rows[round(len(rows) * (1 - HOLDOUT_SHARE)) :]
    probabilities, labels = [], []
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        for start in range(0, len(test), 500):
            batch = test[start : start + 500]
            response = client.post(f"{base}/score", json={"leads": [_lead_payload(r) for r in batch]})
            response.raise_for_status()
            for row, result in zip(batch, response.json()["results"], strict=True):
                routes[result["model"]["route"]] = routes.get(result["model"]["route"], 0) + 1
                probabilities.append(result["probability"])
                labels.append(int(bool(row["converted"])))
    return float(roc_auc_score(labels, probabilities))


def score_phrasebank(base: str, key: str, sentences: Any, routes: dict[str, int]) -> float:
    frame = sentences.interactions
    hold = frame[frame["interaction_id"].isin(sentences.holdout_ids)]
    correct = 0
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        records = list(hold[["interaction_id", "text", "sentiment_label"]].itertuples(index=False))
        for start in range(0, len(records), 100):
            batch = records[start : start + 100]
            items = [{"text": r.text, "interaction_id": f"test-{r.interaction_id}"} for r in batch]
            response = client.post(f"{base}/sentiment", json={"items": items})
            response.raise_for_status()
            for record, result in zip(batch, response.json()["results"], strict=True):
                routes[result["model"]["route"]] = routes.get(result["model"]["route"], 0) + 1
                correct += result["label"] == record.sentiment_label
    return correct / len(hold)


def score_retail(
    base: str, keys: dict[str, str], tests: dict[str, Any], routes: dict[str, int]
) -> dict[str, float]:
    mases, accuracies = [], []
    with httpx.Client(timeout=120) as client:
        for series_id, (history, actual) in tests.items():
            response = client.post(
                f"{base}/forecast",
                json={"months": RETAIL_TEST_MONTHS},
                headers={"Authorization": f"Bearer {keys[f'retail-{series_id}']}"},
            )
            response.raise_for_status()
            body = response.json()
            routes[body["model"]["route"]] = routes.get(body["model"]["route"], 0) + 1
            forecast = np.array([p["forecast"] for p in body["points"]], dtype=float)
            mases.append(forecast_baselines.mase(actual, forecast, history))
            accuracies.append(max(0.0, 1 - float(np.abs(actual - forecast).sum() / np.abs(actual).sum())))
    return {"MASE": float(np.mean(mases)), "accuracy": float(np.mean(accuracies))}


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=152, help="retail series (organizations), first N")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = parser.parse_args()
    started = time.monotonic()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="neuracrm-real-"))
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    env = {
        **os.environ,
        "NEURACRM_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(home / "bentoml"),
        "NEURACRM_MODEL_POLL_SECONDS": "1",
    }
    for name in ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI", "NEURACRM_REDIS_URL", "AIRFLOW_HOME"):
        env.pop(name, None)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("NEURACRM_", "OMP_"))})
    for name in ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI", "NEURACRM_REDIS_URL"):
        os.environ.pop(name, None)
    store = build_store(home, args.series)
    ids = store["ids"]
    warnings = {
        "bank": warnings_in(cli(env, "validate", "leads", "--org", str(ids["bank"]), check=False).stdout),
        "phrasebank": warnings_in(
            cli(env, "validate", "interactions", "--org", str(ids["phrasebank"]), check=False).stdout
        ),
        "retail": warnings_in(cli(env, "validate", "sales", check=False).stdout),
    }
    trained = {}
    for family in ("lead_scoring", "sentiment", "sales_forecast"):
        step = time.monotonic()
        trained[family] = cli(env, "train", family).stdout.strip().splitlines()[-1]
        say(f"{trained[family]} ({time.monotonic() - step:.0f} s)")
        cli(env, "rollout", family, "start", check=False)
    status = cli(env, "status").stdout
    say("baselines")
    baselines = {
        "bank": bank_baselines(store["leads"]),
        "phrasebank": phrasebank_baselines(store["sentences"]),
        "retail": retail_baselines(store["retail"]),
    }
    process, base = serve(env, workdir)
    routes: dict[str, dict[str, int]] = {"bank": {}, "phrasebank": {}, "retail": {}}
    try:
        say("scoring over HTTP")
        served = {
            "bank": {"ROC AUC": score_bank(base, store["keys"]["bank"], ids["bank"], routes["bank"])},
            "phrasebank": {
                "accuracy": score_phrasebank(
                    base, store["keys"]["phrasebank"], store["sentences"], routes["phrasebank"]
                )
            },
            "retail": score_retail(base, store["keys"], store["retail"], routes["retail"]),
        }
    finally:
        process.terminate()
        process.wait(30)
    results = {
        "imports": store["imports"],
        "validation_warnings": warnings,
        "trained": trained,
        "routes": routes,
        "served": served,
        "baselines": baselines,
        "series": args.series,
        "seconds": round(time.monotonic() - started, 1),
    }
    print_results(results)
    print("\nstatus after the rollouts:\n" + status)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_results(r: dict[str, Any]) -> None:
    rows = []
    for name, metric in (("bank", "ROC AUC"), ("phrasebank", "accuracy"), ("retail", "MASE")):
        imp = r["imports"][name]
        base = ", ".join(f"{k} {v:.3f}" for k, v in r["baselines"][name].items())
        route = ", ".join(f"{k} {v:,}" for k, v in sorted(r["routes"][name].items()))
        rows.append(
            f"| {name} | {imp['rows']:,} / {imp['field_errors']:,} / {imp['quarantined']:,} | "
            f"{r['validation_warnings'][name]} | {route} | "
            f"{metric} {r['served'][name][metric]:.3f} | {base} |"
        )
    print(
        "| dataset | rows / with field errors / quarantined | validation warnings | served route | "
        "served metric | baselines (same run) |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nretail accuracy (1 - WAPE, mean): {r['served']['retail']['accuracy']:.3f}")
    for family, line in r["trained"].items():
        print(f"train {family}: {line}")
    print(f"total {r['seconds']:.0f} s, {r['series']} retail series")


if __name__ == "__main__":
    main()
