"""Lead scoring quality and batch cost: the production lead model against the rule-based scorer.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lead_scoring_quality.py --json lead_scoring.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lead_scoring_quality.py --quick     # smoke run

Data: a fresh SQLite store under a temp NEURACRM_HOME, migrated and seeded by the platform's own
``seed_database`` (what ``neuracrm-mlops seed`` runs; default 200 organizations x 48 months, seed 7, 40
leads per organization), read back with ``training.load_leads_with_outcome`` (leads whose outcome is
known) and split with ``training.time_split``: the newest ``--holdout-share`` of the leads by
``created_at`` is the test set, exactly as the ``train_lead_scoring`` task splits.

Quality: ``lead_scoring_model.train`` with an unchanged ``LeadModelConfig()`` (the production model, as
``train_lead_scoring`` fits it) and ``RuleScorer()`` (the baseline and fallback), scored on the test set:
ROC AUC, accuracy at 0.5, Brier score, log loss, precision and recall at 0.5, plus a constant scorer
(the training base rate) for scale, and a paired bootstrap CI of the model-minus-rules differences.
The rule score is a weighted factor score, not a calibrated probability: its AUC is the fair
comparison; its threshold metrics are what the fallback answers with. "acc@tuned" is the accuracy at
the threshold that maximises accuracy on the training leads, for both scorers.

Cost: ``--batch-leads`` leads (default 100,000) drawn fresh from
``neuracrm_mlops.store.synthetic.generate_crm``
(another seed; plain JSON-like records, as an export or the API would carry them), scored in chunks of
``--chunk-size`` by each batch path with and without explanations (the top-3 factors):
- ``predict(scorer, frame)``: the reference path, pandas through the fitted pipeline (the pyfunc's);
- ``compile_scorer(scorer).predict(records)``: the lean path the BentoML service uses.
Wall and CPU seconds, leads/s, and the peak RSS while each run lasted (VmHWM reset before each run on
Linux, else the process peak from ``resource.getrusage``). The store lives in a temp dir, removed at
the end unless ``--keep``. Progress goes to stderr; the markdown report to stdout; ``--json FILE``
gets every number plus the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCORER_LABELS = {
    "model": "production model (`train`, `LeadModelConfig()`)",
    "rules": "rule-based scorer (`RuleScorer()`)",
    "base_rate": "constant: training base rate",
}
PATH_LABELS = {
    "reference": "`predict()` (pandas)",
    "lean": "`compile_scorer().predict()` (lean)",
}


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Machine and memory


def machine_info() -> dict[str, Any]:
    import sklearn

    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_bytes / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit_learn": sklearn.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


# resetting VmHWM also resets what getrusage reports, so the process peak is kept here as well
_PEAKS_SEEN_MIB: list[float] = []


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) on Linux; False when the kernel does not allow it."""
    _PEAKS_SEEN_MIB.append(process_peak_rss_mib())
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def process_peak_rss_mib() -> float:
    """Peak RSS of this process since it started (``ru_maxrss`` is in kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max([peak / 2**20 if sys.platform == "darwin" else peak / 1024, *_PEAKS_SEEN_MIB])


def current_rss_mib() -> float:
    return _status_mib("VmRSS") or math.nan


def peak_rss_mib(was_reset: bool) -> float:
    return (_status_mib("VmHWM") if was_reset else None) or process_peak_rss_mib()


# ---------------------------------------------------------------------------------------------
# Data


def seed_store(home: Path, orgs: int, months: int, seed: int, leads_per_org: int) -> dict[str, Any]:
    """Migrate and seed a SQLite store in ``home``; returns the leads with a known outcome and timings."""
    os.environ["NEURACRM_HOME"] = str(home)  # nothing may fall back to ./.neuracrm
    from neuracrm_mlops.config import reset_settings
    from neuracrm_mlops.store.db.engine import create_engine
    from neuracrm_mlops.store.db.migrate import upgrade
    from neuracrm_mlops.store.seeding import seed_database
    from neuracrm_mlops.training.train import load_leads_with_outcome

    reset_settings()
    engine = create_engine(f"sqlite:///{home / 'crm.sqlite'}")
    try:
        say(f"migrating and seeding {home / 'crm.sqlite'}")
        upgrade(engine)
        summary = seed_database(
            orgs, months, seed, leads_per_org=leads_per_org, engine=engine, step=lambda m: say(f"  {m}")
        )
        started = time.perf_counter()
        leads = load_leads_with_outcome(engine)
        load_seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {
        "leads": leads,
        "leads_total": summary.leads,
        "seed_seconds": summary.seconds,
        "load_seconds": load_seconds,
    }


def batch_records(n: int, months: int, seed: int, leads_per_org: int) -> list[dict[str, Any]]:
    """``n`` fresh synthetic leads as plain JSON-like dicts (the lead columns and ``attributes``)."""
    from neuracrm_mlops.models.lead_scoring_model import INPUT_COLUMNS
    from neuracrm_mlops.store.synthetic import generate_crm

    per_org = max(leads_per_org, 1)
    orgs = math.ceil(n / per_org * 1.2) + 1
    while True:
        crm = generate_crm(orgs, months, seed, leads_per_org=per_org, interactions_per_lead=0.0)
        if len(crm.leads) >= n:
            break
        orgs *= 2
    frame = crm.leads.iloc[:n][[*INPUT_COLUMNS, "attributes"]]
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# Quality


def best_accuracy_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold (predict 1 when p >= t) with the highest accuracy on ``(y, p)``."""
    candidates = np.unique(np.r_[p, np.inf])
    accuracies = [float(np.mean((p >= t).astype(int) == y)) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def quality_metrics(y: np.ndarray, p: np.ndarray, tuned_threshold: float) -> dict[str, float]:
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (p >= 0.5).astype(int)
    constant = len(np.unique(p)) == 1
    return {
        "roc_auc": math.nan if constant else float(roc_auc_score(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "accuracy_tuned": float(accuracy_score(y, (p >= tuned_threshold).astype(int))),
        "tuned_threshold": tuned_threshold,
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "mean_probability": float(np.mean(p)),
    }


def paired_bootstrap(
    y: np.ndarray, p_model: np.ndarray, p_rules: np.ndarray, rounds: int, seed: int
) -> dict[str, dict[str, float]]:
    """95% percentile intervals of model-minus-rules AUC, Brier and accuracy over resampled test sets."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {"roc_auc": [], "brier": [], "accuracy": []}
    n = len(y)
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if len(np.unique(yb)) < 2:
            continue
        pm, pr = p_model[idx], p_rules[idx]
        diffs["roc_auc"].append(float(roc_auc_score(yb, pm) - roc_auc_score(yb, pr)))
        diffs["brier"].append(float(np.mean((pm - yb) ** 2) - np.mean((pr - yb) ** 2)))
        diffs["accuracy"].append(float(np.mean((pm >= 0.5) == yb) - np.mean((pr >= 0.5) == yb)))
    return {
        name: {
            "low": float(np.quantile(values, 0.025)),
            "high": float(np.quantile(values, 0.975)),
            "rounds": float(len(values)),
        }
        for name, values in diffs.items()
        if values
    }


# ---------------------------------------------------------------------------------------------
# Batch cost


def time_batch(score_chunk: Callable[[Any], list[dict[str, Any]]], chunks: Sequence[Any]) -> dict[str, Any]:
    """Score every chunk; wall and CPU seconds, leads/s, the peak RSS during the run, the probabilities."""
    rss_before = current_rss_mib()
    was_reset = reset_peak_rss()
    probabilities: list[float] = []
    n_factors = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for chunk in chunks:
        results = score_chunk(chunk)
        probabilities.extend(r["probability"] for r in results)
        n_factors += sum(len(r["factors"]) for r in results)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    leads = len(probabilities)
    return {
        "leads": leads,
        "chunks": len(chunks),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "leads_per_second": leads / wall if wall > 0 else math.nan,
        "microseconds_per_lead": wall / leads * 1e6 if leads else math.nan,
        "factors_per_lead": n_factors / leads if leads else 0.0,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(was_reset),
        "peak_rss_scope": "this run (VmHWM reset)" if was_reset else "process since start (ru_maxrss)",
        "probabilities": np.asarray(probabilities, dtype=float),
    }


def batch_cost(
    scorers: dict[str, Any], records: list[dict[str, Any]], chunk_size: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time every (scorer, path, explanations) combination on ``records``; rows and path checks."""
    from neuracrm_mlops.models.lead_scoring_model import compile_scorer, predict

    record_chunks = chunked(records, chunk_size)
    frame_chunks = [pd.DataFrame(list(chunk)) for chunk in record_chunks]
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        lean = compile_scorer(scorer)
        checks[f"{name}_compile_seconds"] = time.perf_counter() - started
        # path -> (scoring function taking a chunk and explain=..., the chunks it takes)
        paths: dict[str, tuple[Callable[..., list[dict[str, Any]]], Sequence[Any]]] = {
            "reference": (partial(predict, scorer), frame_chunks),
            "lean": (lean.predict, record_chunks),
        }
        probabilities: dict[str, np.ndarray] = {}
        for path, (score, chunks) in paths.items():
            for explain in (False, True):
                say(f"batch: {name}, {path} path, explain={explain}, {len(records):,} leads")
                result = time_batch(partial(score, explain=explain), chunks)
                probabilities[f"{path}/{explain}"] = result.pop("probabilities")
                rows.append({"scorer": name, "path": path, "explain": explain, **result})
                say(
                    f"  {result['wall_seconds']:.1f} s, {result['leads_per_second']:,.0f} leads/s, "
                    f"peak RSS {result['peak_rss_mib']:,.0f} MiB"
                )
        reference = probabilities["reference/False"]
        checks[f"{name}_max_probability_difference_between_paths"] = float(
            max(np.max(np.abs(p - reference), initial=0.0) for p in probabilities.values())
        )
        checks[f"{name}_lean_fallback_batches"] = lean.fallbacks
        checks[f"{name}_mean_probability"] = float(np.mean(reference))
    return rows, checks


# ---------------------------------------------------------------------------------------------
# Report


def _f(value: float, digits: int = 3) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def _ci(ci: dict[str, float] | None, digits: int = 3) -> str:
    return "n/a" if not ci else f"[{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]"


def render_markdown(result: dict[str, Any]) -> str:
    machine, data, split = result["machine"], result["data"], result["split"]
    quality, diff = result["quality"], result["model_minus_rules"]
    lines = [
        f"Command: `{result['command']}`",
        f"Date: {machine['date']}. Machine: {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, scikit-learn {machine['scikit_learn']}, "
        f"OMP_NUM_THREADS={machine['omp_num_threads']}.",
        "",
        f"Data: `seed_database({data['orgs']}, {data['months']}, seed={data['seed']}, "
        f"leads_per_org={data['leads_per_org']})` into SQLite: {data['leads_total']:,} leads, "
        f"{data['leads_with_outcome']:,} with a known outcome. Time split (`time_split`, newest "
        f"{split['holdout_share']:.0%} held out): train {split['train_leads']:,} leads created "
        f"{split['train_from']} .. {split['train_to']} (positive rate {split['train_positive_rate']:.3f}), "
        f"test {split['test_leads']:,} leads created {split['test_from']} .. {split['test_to']} "
        f"(positive rate {split['test_positive_rate']:.3f}).",
        "",
        "| scorer | ROC AUC | accuracy@0.5 | acc@tuned (t) | Brier | log loss | precision | recall "
        "| mean p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in quality.items():
        lines.append(
            f"| {SCORER_LABELS[name]} | {_f(m['roc_auc'])} | {_f(m['accuracy'])} | "
            f"{_f(m['accuracy_tuned'])} ({_f(m['tuned_threshold'], 2)}) | {_f(m['brier'])} | "
            f"{_f(m['log_loss'])} | {_f(m['precision'])} | {_f(m['recall'])} | {_f(m['mean_probability'])} |"
        )
    ci = result["bootstrap_ci"]
    lines += [
        "",
        f"Model minus rules on the test set (paired bootstrap 95% CI, {result['bootstrap_rounds']} rounds): "
        f"ROC AUC {diff['roc_auc']:+.3f} {_ci(ci.get('roc_auc'))}, accuracy@0.5 {diff['accuracy']:+.3f} "
        f"{_ci(ci.get('accuracy'))}, Brier {diff['brier']:+.3f} {_ci(ci.get('brier'))} (lower is better).",
        f"Training the production model: {result['timings']['train_seconds']:.1f} s wall "
        f"({split['train_leads']:,} leads); seeding the store {data['seed_seconds']:.1f} s.",
    ]
    cost = result["batch"]
    lines += [
        "",
        f"Batch scoring of {cost['leads']:,} fresh synthetic leads (`generate_crm`, seed {cost['seed']}), "
        f"chunks of {cost['chunk_size']:,}, one process:",
        "",
        "| scorer | path | top-3 factors | wall s | leads/s | µs/lead | CPU s "
        "| peak RSS MiB (+ over start) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in cost["runs"]:
        lines.append(
            f"| {r['scorer']} | {PATH_LABELS[r['path']]} | {'yes' if r['explain'] else 'no'} | "
            f"{r['wall_seconds']:.1f} | {r['leads_per_second']:,.0f} | {r['microseconds_per_lead']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['peak_rss_mib']:,.0f} "
            f"(+{r['peak_rss_mib'] - r['rss_before_mib']:,.0f}) |"
        )
    checks = cost["checks"]
    scope = cost["runs"][0]["peak_rss_scope"] if cost["runs"] else "n/a"
    lines += [
        "",
        f"- Peak RSS: {scope}; process peak over the whole benchmark "
        f"{result['process_peak_rss_mib']:,.0f} MiB.",
        f"- `compile_scorer` (incl. its self-check): model {checks['model_compile_seconds']:.2f} s, "
        f"rules {checks['rules_compile_seconds']:.2f} s. Lean batches answered by the pandas fallback: "
        f"model {checks['model_lean_fallback_batches']}, rules {checks['rules_lean_fallback_batches']}.",
        f"- Largest probability difference between the paths (with/without factors): model "
        f"{checks['model_max_probability_difference_between_paths']:.2g}, rules "
        f"{checks['rules_max_probability_difference_between_paths']:.2g} (answers are rounded to 4 places).",
        f"- Total runtime {result['timings']['total_seconds']:.0f} s.",
    ]
    busy = [r for r in cost["runs"] if r["wall_seconds"] > 1.2 * r["cpu_seconds"] + 0.5]
    if busy:
        lines.append(
            f"- Wall time exceeds CPU time by more than 20% in {len(busy)} of {len(cost['runs'])} runs: "
            "the process was waiting for a core (a busy machine); CPU seconds are the steadier figure."
        )
    return "\n".join(lines) + "\n"


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN / infinity as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=200, help="seeded organizations (default 200)")
    parser.add_argument("--months", type=int, default=48, help="months of seeded history (default 48)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7, as `seed`)")
    parser.add_argument(
        "--leads-per-org", type=int, default=40, help="mean leads per organization (default 40, as `seed`)"
    )
    parser.add_argument(
        "--holdout-share", type=float, default=0.2, help="newest share of leads held out (default 0.2)"
    )
    parser.add_argument("--batch-leads", type=int, default=100_000, help="leads scored in batch")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="leads per scoring call")
    parser.add_argument("--bootstrap", type=int, default=1_000, help="paired bootstrap rounds (0: none)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 40 orgs, 5,000 batch leads, 200 bootstrap rounds"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    parser.add_argument("--keep", action="store_true", help="keep the temp store (its path goes to stderr)")
    args = parser.parse_args(argv)
    if args.quick:
        args.orgs, args.batch_leads, args.bootstrap = 40, 5_000, min(args.bootstrap, 200)
        args.chunk_size = min(args.chunk_size, 2_500)
    if not 0 < args.holdout_share < 1:
        parser.error("--holdout-share must be between 0 and 1")
    if args.batch_leads < 1 or args.chunk_size < 1 or args.orgs < 1 or args.months < 1:
        parser.error("--orgs, --months, --batch-leads and --chunk-size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        ["python benchmarks/lead_scoring_quality.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="neuracrm-lead-bench-"))
    try:
        result = run(args, workdir / "home", command)
    finally:
        if args.keep:
            say(f"the store: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["timings"]["total_seconds"] = time.perf_counter() - started
    print(render_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(json_ready(result), indent=2, allow_nan=False, default=str) + "\n")
        say(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace, home: Path, command: str) -> dict[str, Any]:
    from neuracrm_mlops.models import lead_scoring_model as lsm
    from neuracrm_mlops.training.train import time_split

    machine = machine_info()
    stored = seed_store(home, args.orgs, args.months, args.seed, args.leads_per_org)
    leads: pd.DataFrame = stored["leads"]
    train_part, test_part = time_split(leads, "created_at", args.holdout_share)
    y_train = train_part["converted"].astype(int).to_numpy()
    y_test = test_part["converted"].astype(int).to_numpy()
    say(f"{len(train_part):,} training leads, {len(test_part):,} test leads")

    say("training the production model (LeadModelConfig() defaults)")
    config = lsm.LeadModelConfig()
    train_started = time.perf_counter()
    model = lsm.train(train_part, train_part["converted"].astype(bool), config)
    train_seconds = time.perf_counter() - train_started
    say(f"  trained in {train_seconds:.1f} s")
    rules = lsm.RuleScorer()

    say("scoring the test set")
    base_rate = float(np.mean(y_train))
    train_p = {"model": model.predict_proba(train_part), "rules": rules.predict_proba(train_part)}
    test_p = {"model": model.predict_proba(test_part), "rules": rules.predict_proba(test_part)}
    test_p["base_rate"] = np.full(len(y_test), base_rate)
    train_p["base_rate"] = np.full(len(y_train), base_rate)
    quality = {
        name: quality_metrics(y_test, p, best_accuracy_threshold(y_train, train_p[name]))
        for name, p in test_p.items()
    }
    diff = {
        k: quality["model"][k] - quality["rules"][k] for k in ("roc_auc", "accuracy", "brier", "log_loss")
    }
    ci: dict[str, dict[str, float]] = {}
    if args.bootstrap > 0:
        say(f"paired bootstrap, {args.bootstrap} rounds")
        ci = paired_bootstrap(y_test, test_p["model"], test_p["rules"], args.bootstrap, args.seed)

    say(f"generating {args.batch_leads:,} leads for batch scoring")
    batch_seed = args.seed + 1_000
    records = batch_records(args.batch_leads, args.months, batch_seed, args.leads_per_org)
    runs, checks = batch_cost({"model": model, "rules": rules}, records, args.chunk_size)

    return {
        "command": command,
        "machine": machine,
        "data": {
            "source": "seed_database into a temp SQLite store, read with load_leads_with_outcome",
            "orgs": args.orgs,
            "months": args.months,
            "seed": args.seed,
            "leads_per_org": args.leads_per_org,
            "leads_total": stored["leads_total"],
            "leads_with_outcome": len(leads),
            "seed_seconds": stored["seed_seconds"],
        },
        "split": {
            "method": "training.time_split(leads, 'created_at', holdout_share)",
            "holdout_share": args.holdout_share,
            "train_leads": len(train_part),
            "test_leads": len(test_part),
            "train_from": str(train_part["created_at"].min().date()),
            "train_to": str(train_part["created_at"].max().date()),
            "test_from": str(test_part["created_at"].min().date()),
            "test_to": str(test_part["created_at"].max().date()),
            "train_positive_rate": float(np.mean(y_train)),
            "test_positive_rate": float(np.mean(y_test)),
        },
        "model_config": config.as_params(),
        "quality": quality,
        "model_minus_rules": diff,
        "bootstrap_rounds": args.bootstrap,
        "bootstrap_ci": ci,
        "batch": {
            "leads": len(records),
            "seed": batch_seed,
            "chunk_size": args.chunk_size,
            "runs": runs,
            "checks": checks,
        },
        "timings": {
            "train_seconds": train_seconds,
            "seed_seconds": stored["seed_seconds"],
            "load_seconds": stored["load_seconds"],
        },
        "process_peak_rss_mib": process_peak_rss_mib(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
