"""Shared fixtures: a private NEURACRM_HOME per test, and fresh databases on SQLite and PostgreSQL.

PostgreSQL is the real server at 127.0.0.1:5432 (override with NEURACRM_TEST_PG_ADMIN_URL). Each
test gets its own database, created here and dropped afterwards, so two runs never collide.
"""

from __future__ import annotations

import os
import shutil

# Before scikit-learn loads: OpenMP threads spin badly on 2 busy cores (HistGradientBoosting
# predictions ran 30x slower under load); one thread each is faster and steadier here.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_databases import create_pg_database, drop_pg_database

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.db.engine import create_engine, dispose_engines
from neuracrm_mlops.db.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def gx_root_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the GX context, so that test runs never write into the repository."""
    root = tmp_path_factory.mktemp("gx-context") / "expectations"
    shutil.copytree(REPO / "expectations", root, ignore=shutil.ignore_patterns("uncommitted"))
    return root


@pytest.fixture(autouse=True)
def neuracrm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gx_root_copy: Path) -> Iterator[Path]:
    """Every test runs on its own data dir and GX context copy, and re-reads the environment."""
    home = tmp_path / "neuracrm-home"
    monkeypatch.setenv("NEURACRM_HOME", str(home))
    monkeypatch.setenv("NEURACRM_GX_ROOT", str(gx_root_copy))
    for name in ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME", "NEURACRM_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield home
    dispose_engines()
    reset_settings()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest, neuracrm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database (no schema) on each backend; also set as NEURACRM_DB_URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{neuracrm_home / 'test.sqlite'}"
        monkeypatch.setenv("NEURACRM_DB_URL", url)
        reset_settings()
        yield url
        return
    url = create_pg_database()
    monkeypatch.setenv("NEURACRM_DB_URL", url)
    reset_settings()
    try:
        yield url
    finally:
        dispose_engines()
        drop_pg_database(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated database on each backend."""
    engine = create_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


# --- the demo's test runs beside the rest of the suite (tests/demo_run.py) ----------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the demo's tests to the end of the run: the demo runs in the background meanwhile."""
    from demo_run import TEST_FILE

    demo = [item for item in items if item.nodeid.startswith(TEST_FILE)]
    if demo and len(demo) < len(items):
        items[:] = [item for item in items if not item.nodeid.startswith(TEST_FILE)] + demo


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the demo when its tests were collected and other tests run before them."""
    from demo_run import TEST_FILE, start

    if session.config.option.collectonly:
        return
    nodeids = [item.nodeid for item in session.items]
    if any(n.startswith(TEST_FILE) for n in nodeids) and not all(n.startswith(TEST_FILE) for n in nodeids):
        start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from demo_run import finish

    finish()
