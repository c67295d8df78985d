"""The forecast retraining fans out over two Celery workers that share nothing local, registers every
organization once through the MLflow server, and a prediction service on a third working directory
loads what they registered (issue 17: CeleryExecutor, served artifacts)."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from neuracrm_mlops.ops import airflow_cluster

from .conftest import DAG_ID, ORGANIZATIONS, CeleryRun

pytestmark = [pytest.mark.xdist_group("celery_live"), pytest.mark.timeout(900)]
SERVICE = "neuracrm_mlops.serving.service:PredictionService"


def test_the_forecast_chunks_ran_on_both_workers_each_once(celery_run: CeleryRun) -> None:
    assert celery_run.state == "success", celery_run.cluster.tails()
    instances = celery_run.task_instances()
    chunks = [ti for ti in instances if ti["task_id"] == "train_forecast_chunk"]
    assert len(chunks) == -(-ORGANIZATIONS // 4)  # ceil(24 / chunk size 4): the plan's near-equal chunks
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in chunks), chunks
    by_worker = Counter(ti["hostname"] for ti in chunks)
    assert set(by_worker) == set(celery_run.workers), by_worker  # both workers took chunks
    assert len({(ti["hostname"], ti["pid"]) for ti in chunks}) == len(chunks)  # a process per task
    # the workers ran chunks at the same time (NEURACRM_FORECAST_CHUNK_CONCURRENCY=2), never two on one
    overlapping = [
        (a["map_index"], b["map_index"])
        for a in chunks
        for b in chunks
        if a["map_index"] < b["map_index"]
        and a["start_date"] < b["end_date"]
        and b["start_date"] < a["end_date"]
    ]
    assert overlapping, [(ti["hostname"], ti["start_date"], ti["end_date"]) for ti in chunks]
    same_worker = [(a, b) for a, b in overlapping if chunks[a]["hostname"] == chunks[b]["hostname"]]
    assert not same_worker, same_worker  # concurrency 1 per worker
    # each task's log is in the working directory of the worker that ran it, and nowhere else
    for ti in instances:
        assert ti["hostname"] in celery_run.workers, ti
        for worker in celery_run.workers:
            logs = celery_run.cluster.workdirs[worker] / "airflow-home" / "logs" / f"dag_id={DAG_ID}"
            suffix = f"map_index={ti['map_index']}" if ti["map_index"] >= 0 else ""
            found = [
                path
                for path in logs.rglob("attempt=1.log")
                if f"task_id={ti['task_id']}" in str(path) and (not suffix or suffix in str(path))
            ]
            assert bool(found) == (worker == ti["hostname"]), (worker, ti, found)


def test_every_organization_is_registered_once_with_artifacts_on_the_server(celery_run: CeleryRun) -> None:
    client = MlflowClient(tracking_uri=celery_run.mlflow_url, registry_uri=celery_run.mlflow_url)
    versions = client.search_model_versions("name LIKE 'sales_forecast_org_%'", max_results=1_000)
    per_model = Counter(version.name for version in versions)
    assert per_model == {f"sales_forecast_org_{org}": 1 for org in range(1, ORGANIZATIONS + 1)}
    for version in versions[:3]:
        location = client.get_model_version_download_uri(version.name, version.version)
        assert location.startswith("mlflow-artifacts:/"), location
    served = celery_run.cluster.root / "mlflow-server" / "artifacts"
    assert sum(1 for path in served.rglob("MLmodel")) >= ORGANIZATIONS
    # nothing of a model on a worker's disk: the workers wrote through the server only
    for worker in celery_run.workers:
        workdir = celery_run.cluster.workdirs[worker]
        assert not list(workdir.rglob("MLmodel")), f"{worker} kept model files in {workdir}"


def test_a_service_in_another_directory_loads_a_version_the_workers_registered(celery_run: CeleryRun) -> None:
    client = MlflowClient(tracking_uri=celery_run.mlflow_url, registry_uri=celery_run.mlflow_url)
    (version,) = client.search_model_versions("name = 'sales_forecast_org_5'")
    client.set_registered_model_alias("sales_forecast_org_5", "champion", version.version)
    workdir = celery_run.cluster.root / "prediction-service"
    port = airflow_cluster.free_port()
    env = {
        **{k: v for k, v in celery_run.crm_env.items() if k != "NEURACRM_GX_ROOT"},
        "NEURACRM_HOME": str(workdir / "home"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "NEURACRM_FORECAST_LOAD_WAIT_SECONDS": "25",
        "PATH": os.pathsep.join([str(airflow_cluster.BIN), os.environ.get("PATH", "")]),
    }
    argv = [
        str(airflow_cluster.BIN / "bentoml"),
        "serve",
        SERVICE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    celery_run.cluster.start("prediction-service", argv, env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    celery_run.cluster.wait_http(f"{url}/readyz", "the prediction service ready", timeout=180)
    keys_file = Path(celery_run.crm_env["NEURACRM_HOME"]) / "api_keys.csv"
    with keys_file.open() as handle:
        keys = {int(row["organization_id"]): row["api_key"] for row in csv.DictReader(handle)}
    response = httpx.post(
        f"{url}/forecast",
        content=json.dumps({"months": 6}),
        headers={"Authorization": f"Bearer {keys[5]}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "sales_forecast_org_5", "version": version.version, "route": "champion"}
    assert body["fallback"] is False and len(body["points"]) == 6
