"""Monthly sales forecasts: one registered model per organization (``sales_forecast_org_<id>``),
rolled out by cohorts of organizations and judged on ``max(0, 1 - WAPE)`` over the months with actuals."""

from __future__ import annotations

from typing import Any

from neuracrm_mlops.families.base import CliTrain, FamilySpec, MonitoringChecks, TrainRequest


def train(request: TrainRequest) -> dict[str, Any]:
    """Every organization's forecast, or ``request.organization``'s (workers and progress: the CLI)."""
    from neuracrm_mlops.training.forecasts import train_forecasts_for

    options: dict[str, Any] = {}
    if request.workers is not None:
        options["workers"] = request.workers
    if request.progress is not None:
        options["progress"] = request.progress
    outcome: dict[str, Any] = train_forecasts_for(request.organization, request.lineage, **options).as_dict()
    return outcome


FAMILY = FamilySpec(
    name="sales_forecast",
    dataset="sales",
    validation_suite="monthly_sales",
    naming="per_organization",
    model_prefix="sales_forecast_org_",
    fallback="seasonal naive",
    rollout_strategy="organization_cohort",
    accuracy_measure="one_minus_wape",
    trainer=train,
    # no input features to compare (drift) and no labels (bias); one pass per organization's champion
    checks=MonitoringChecks(drift=False, bias=False, per_organization=True),
    cli_train=CliTrain(organization_option=True, workers_option=True, progress_unit="organizations"),
)
