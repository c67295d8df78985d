"""Every DAG file imports cleanly and follows the conventions: dag_id = file stem, tags, an explicit
schedule, retries >= 2 on every task, docs."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_harness import REPO, AirflowHarness

DAG_FILES = sorted(p.stem for p in (REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dag_info(airflow: AirflowHarness, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return airflow.inspect_dags(airflow.env(tmp_path_factory.mktemp("home")))


def test_dag_folder_imports_without_errors(dag_info: dict[str, object]) -> None:
    assert dag_info["errors"] == {}
    assert sorted(dag_info["dags"]) == DAG_FILES  # type: ignore[call-overload]


@pytest.mark.parametrize("dag_id", DAG_FILES)
def test_dag_follows_the_conventions(dag_info: dict[str, dict[str, dict[str, object]]], dag_id: str) -> None:
    dag = dag_info["dags"][dag_id]
    assert dag["file_stem"] == dag_id
    assert dag["tags"] and "neuracrm" in dag["tags"]  # type: ignore[operator]
    assert dag["schedule"] != "NullTimetable"
    assert dag["doc"] is True
    assert dag["catchup"] is False
    assert all(retries >= 2 for retries in dag["retries"].values())  # type: ignore[attr-defined]


def test_no_bare_imports_of_top_level_folders() -> None:
    offenders = []
    sources = [
        *REPO.glob("dags/*.py"),
        *REPO.glob("models/*.py"),
        *REPO.glob("serving/*.py"),
        *REPO.glob("src/**/*.py"),
    ]
    bare = ("import models", "from models", "import serving", "from serving", "from .")
    for path in sources:
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith(bare):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert offenders == []
