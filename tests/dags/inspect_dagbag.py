"""Run in a subprocess by the DAG tests: load the DagBag and print its facts as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dags = {
    dag_id: {
        "file_stem": Path(dag.fileloc).stem,
        "tags": sorted(dag.tags),
        "schedule": type(dag.timetable).__name__,
        "retries": {task.task_id: task.retries for task in dag.tasks},
        "doc": bool(dag.doc_md),
        "catchup": dag.catchup,
    }
    for dag_id, dag in bag.dags.items()
}
errors = {path: str(error) for path, error in bag.import_errors.items()}
print("JSON:" + json.dumps({"errors": errors, "dags": dags}))
