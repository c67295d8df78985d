"""The MLflow side: experiments, registered models, versions with lineage tags, aliases.

Names: one registered model per family (``lead_scoring``, ``sentiment``, the rule baseline
``lead_scoring_rules``) and one per organization for forecasts (``sales_forecast_org_<id>``).
Aliases: ``champion`` (serving), ``challenger`` (in rollout), ``previous`` (the rollback target).
Every version carries tags: ``status`` (challenger / rejected / champion / previous), ``reason``,
``semver``, ``run_key`` (the DAG run's idempotency key), and lineage (``data_snapshot_hash``,
``validation_run_id``, ``gx_report``, ``git_commit``, ``dag_run_id``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from neuracrm_mlops.config import get_settings

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
LEAD_MODEL = "lead_scoring"
LEAD_RULES_MODEL = "lead_scoring_rules"
SENTIMENT_MODEL = "sentiment"
FORECAST_MODEL_PREFIX = "sales_forecast_org_"


def forecast_model_name(organization_id: int) -> str:
    return f"{FORECAST_MODEL_PREFIX}{organization_id}"


def configure_mlflow() -> Any:
    """Point MLflow at the configured store, quietly; returns an MlflowClient."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # benign on every save: no signature for pandas-in/pandas-out wrappers, pip version unknown in
    # uv venvs, the cloudpickle notice for python_model objects
    for noisy in ("mlflow.pyfunc", "mlflow.utils.environment", "mlflow.models.model"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    uri = get_settings().mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """The experiment's id; local stores keep artifacts under NEURACRM_HOME/mlartifacts."""
    client = configure_mlflow()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    settings = get_settings()
    location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (settings.home / "mlartifacts" / name).resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another task
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def ensure_registered_model(client: Any, name: str, description: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=description)
        except MlflowException:
            client.get_registered_model(name)  # created concurrently


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The code version: NEURACRM_GIT_COMMIT (config.Settings.git_commit), else the checkout's HEAD,
    else "unknown"."""
    from neuracrm_mlops.config import get_settings

    configured = get_settings().git_commit
    if configured:
        return configured
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        return result.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def find_version_by_run_key(client: Any, name: str, run_key: str) -> Any | None:
    """A version already registered for this DAG run (idempotent re-runs), or None."""
    return version_with_run_key(client.search_model_versions(f"name = '{name}'"), run_key)


def version_with_run_key(versions: Iterable[Any], run_key: str) -> Any | None:
    return next((v for v in versions if v.tags.get("run_key") == run_key), None)


def versions_by_name(client: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """Every version of each of ``names`` (registered or not: an empty list), one paged search per
    100 names instead of one per model."""
    found: dict[str, list[Any]] = {name: [] for name in names}
    for start in range(0, len(names), 100):
        listed = ", ".join(f"'{name}'" for name in names[start : start + 100])
        token = None
        while True:
            page = client.search_model_versions(f"name IN ({listed})", max_results=10_000, page_token=token)
            for version in page:
                found[version.name].append(version)
            token = page.token
            if not token:
                break
    return found


def next_semantic_version(client: Any, name: str, schema_hash: str, params_hash: str) -> str:
    """major: the input schema changed; minor: the model or its parameters changed; patch: new data only."""
    return semantic_version_after(client.search_model_versions(f"name = '{name}'"), schema_hash, params_hash)


def semantic_version_after(versions: Iterable[Any], schema_hash: str, params_hash: str) -> str:
    """The semver of the next version after ``versions`` (one model's): see next_semantic_version."""
    latest = None
    for version in versions:
        if "semver" in version.tags and (latest is None or int(version.version) > int(latest.version)):
            latest = version
    if latest is None:
        return "1.0.0"
    major, minor, patch = (int(p) for p in latest.tags["semver"].split("."))
    if latest.tags.get("schema_hash") != schema_hash:
        return f"{major + 1}.0.0"
    if latest.tags.get("params_hash") != params_hash:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def load_family_object(name: str, alias: str) -> tuple[Any, str] | None:
    """The family object (e.g. a LeadScoringModel) behind ``name@alias`` and its version, or None."""
    import mlflow.pyfunc

    client = configure_mlflow()
    version = alias_version(client, name, alias)
    if version is None:
        return None
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return pyfunc.unwrap_python_model().model, str(version.version)


def models_with_prefix(client: Any, prefix: str = FORECAST_MODEL_PREFIX) -> Iterator[Any]:
    """Every registered model whose name starts with ``prefix`` (paged: one call per 1,000 models)."""
    token = None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}%'", max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


CANARY_WEIGHT_TAG = "canary_weight"


def canary_weight_of(tags: dict[str, str]) -> float:
    """The challenger's traffic share held in a registered model's tags (0 when unset or unreadable)."""
    try:
        weight = float(tags.get(CANARY_WEIGHT_TAG, "0") or 0)
    except ValueError:
        log.warning("ignoring an unreadable %s tag %r", CANARY_WEIGHT_TAG, tags.get(CANARY_WEIGHT_TAG))
        return 0.0
    return min(max(weight, 0.0), 1.0)


def canary_weight_value(weight: float) -> str:
    """The ``canary_weight`` tag's text for a traffic share (0..1); ValueError outside it."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"canary weight must be between 0 and 1, got {weight}")
    return repr(float(weight))


def set_canary_weight(client: Any, name: str, weight: float) -> None:
    """Set the challenger's traffic share (0..1); serving picks it up at its next poll.

    Only for models nothing rolls out (tests, seeding): rollout moves set the weight through
    ``rollout_state.RegistryPlan`` so that the ledger records it first and a crash is repaired.
    """
    client.set_registered_model_tag(name, CANARY_WEIGHT_TAG, canary_weight_value(weight))


def load_python_model(name: str, version: str) -> Any:
    """The pyfunc wrapper saved in ``name`` version ``version`` (its ``model``: the family object)."""
    import mlflow.pyfunc

    configure_mlflow()
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def version_links(name: str, version: str | None) -> dict[str, str]:
    """Where on-call looks at a version: the MLflow UI page (``NEURACRM_MLFLOW_UI_URL``)."""
    from neuracrm_mlops.config import get_settings

    if version is None:
        return {}
    base = get_settings().mlflow_ui_url.rstrip("/")
    return {"mlflow_version": f"{base}/#/models/{name}/versions/{version}"}
