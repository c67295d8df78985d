"""The DAG task bodies, as plain functions: each DAG task is one call into this module.

They return small JSON-friendly dicts (XCom-sized) and raise on failure; the CLI calls the same
functions, so nothing here needs Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neuracrm_mlops.training import Lineage, TrainingOutcome

FAMILY_DATASETS = {"lead_scoring": "leads", "sales_forecast": "sales", "sentiment": "interactions"}
FAMILY_DATASETS = {"lead_scoring": "leads", "sales_forecast": "sales", "sentiment": "interactions"}
VALIDATION_SUMMARY_KEYS = (
    "dataset",
    "organization_id",
    "row_count",
    "success",
    "run_row_id",
    "data_docs_path",
    "snapshot_hash",
    "critical_failures",
    "warning_failures",
)


def validate_for_training(dataset: str, *, run_id: str, organization_id: int | None = None) -> dict[str, Any]:
    """Validate ``dataset`` with its Great Expectations suite; raise ValidationFailedError when critical.

    Alerts are written by the validation library in both cases (critical: training blocked;
    warning: training goes on). Returns the validation summary that training logs as lineage.
    """
    from neuracrm_mlops.validation import require_valid, validate_dataset

    report = validate_dataset(dataset, organization_id, run_id=run_id)
    require_valid(report)
    full = report.as_dict()
    return {key: full[key] for key in VALIDATION_SUMMARY_KEYS if key in full}


def train_family(
    family: str,
    *,
    run_key: str,
    dag_run_id: str,
    validation: dict[str, Any],
    organization: str | int | None = None,
) -> dict[str, Any]:
    """Train, gate and register one model family (for forecasts: every organization, or one)."""
    from neuracrm_mlops import training

    lineage = Lineage(run_key=run_key, dag_run_id=dag_run_id, validation=validation)
    if family == "sales_forecast":
        from neuracrm_mlops.forecast_training import train_forecasts_for

        forecasts: dict[str, Any] = train_forecasts_for(organization, lineage).as_dict()
        return forecasts
    trainers: dict[str, Callable[[Lineage], TrainingOutcome]] = {
        "lead_scoring": training.train_lead_scoring,
        "sentiment": training.train_sentiment,
    }
    if family not in trainers:
        raise ValueError(f"unknown model family {family!r}: use one of {', '.join(trainers)}")
    outcome: TrainingOutcome = trainers[family](lineage)
    return outcome.as_dict()


def train_forecast_chunk(
    organization_ids: list[int], *, run_key: str, dag_run_id: str, validation: dict[str, Any]
) -> dict[str, Any]:
    """One mapped task of the forecast DAG: train and register a chunk of organizations."""
    from neuracrm_mlops.forecast_training import train_forecast_chunk as train_chunk

    lineage = Lineage(run_key=run_key, dag_run_id=dag_run_id, validation=validation)
    summary: dict[str, Any] = train_chunk(organization_ids, lineage).as_dict()
    return summary


def summarize_forecast_chunks(results: list[dict[str, Any]]) -> dict[str, int]:
    """Organizations per status over every chunk of a forecast DAG run."""
    counts: dict[str, int] = {}
    for result in results:
        for status, count in result["status_counts"].items():
            counts[status] = counts.get(status, 0) + count
    return counts
