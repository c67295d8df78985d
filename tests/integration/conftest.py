"""Fixtures of the integration tests (the shared ones, for every directory: tests/conftest.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from neuracrm_mlops.config import reset_settings
from neuracrm_mlops.store.seeding import seed_database


@pytest.fixture
def seeded(home_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """A small seeded CRM (30 organizations x 36 months) in the embedded stores under the test's
    NEURACRM_HOME, its own MLflow registry beside it, and the accuracy floor at 0.70: registration is
    what these tests check; model quality is checked on more data."""
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.70")
    reset_settings()
    seed_database(30, 36, 5, engine=home_engine)
    return home_engine
