"""Run in a subprocess by the DAG tests: load the DagBag and print its facts as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from airflow.dag_processing.dagbag import DagBag


def _asset_uris(timetable: Any) -> list[str]:
    """The URIs of the assets a DAG's schedule waits for (none for a time-only schedule)."""

    def walk(condition: Any) -> list[str]:
        if hasattr(condition, "objects"):  # AssetAny / AssetAll
            return [uri for obj in condition.objects for uri in walk(obj)]
        return [condition.uri]

    condition = getattr(timetable, "asset_condition", None)
    return [] if condition is None else sorted(walk(condition))


def _condition_kind(timetable: Any) -> str | None:
    condition = getattr(timetable, "asset_condition", None)
    return None if condition is None else type(condition).__name__


bag = DagBag(dag_folder=sys.argv[1])
dags = {
    dag_id: {
        "file_stem": Path(dag.fileloc).stem,
        "tags": sorted(dag.tags),
        "schedule": type(dag.timetable).__name__,
        "schedule_assets": _asset_uris(dag.timetable),
        "schedule_condition": _condition_kind(dag.timetable),
        "cron": getattr(getattr(dag.timetable, "timetable", dag.timetable), "expression", None),
        "retries": {task.task_id: task.retries for task in dag.tasks},
        "outlets": {task.task_id: sorted(o.uri for o in task.outlets) for task in dag.tasks if task.outlets},
        "upstream": {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks},
        "params": sorted(dag.params.keys()),
        "doc": bool(dag.doc_md),
        "catchup": dag.catchup,
    }
    for dag_id, dag in bag.dags.items()
}
errors = {path: str(error) for path, error in bag.import_errors.items()}
print("JSON:" + json.dumps({"errors": errors, "dags": dags}))
