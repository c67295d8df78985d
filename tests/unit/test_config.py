"""Settings: embedded defaults under NEURACRM_HOME, read when first used, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuracrm_mlops.config import get_settings, reset_settings
from neuracrm_mlops.db.engine import normalize_url
from neuracrm_mlops.errors import ConfigurationError


def test_defaults_put_every_store_under_the_data_dir(neuracrm_home: Path) -> None:
    settings = get_settings()
    assert settings.db_url == f"sqlite:///{neuracrm_home.resolve() / 'crm.sqlite'}"
    assert settings.mlflow_tracking_uri == f"sqlite:///{neuracrm_home.resolve() / 'mlflow.sqlite'}"
    assert settings.airflow_home == neuracrm_home.resolve() / "airflow"
    assert settings.redis_url is None
    assert settings.accuracy_floor == 0.80


def test_settings_are_read_once_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.9")
    assert get_settings().accuracy_floor == 0.9
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", "0.7")
    assert get_settings().accuracy_floor == 0.9
    reset_settings()
    assert get_settings().accuracy_floor == 0.7


@pytest.mark.parametrize(("value", "problem"), [("high", "not a number"), ("1.5", "between 0.0 and 1.0")])
def test_bad_threshold_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str, problem: str) -> None:
    monkeypatch.setenv("NEURACRM_ACCURACY_FLOOR", value)
    with pytest.raises(ConfigurationError, match=f"NEURACRM_ACCURACY_FLOOR={value!r} .*{problem}"):
        get_settings()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u:p@db:5432/crm") == "postgresql+psycopg://u:p@db:5432/crm"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_alert_delivery_settings_have_defaults_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "NEURACRM_ALERT_WEBHOOK_URL",
        "NEURACRM_ALERT_ESCALATE_MINUTES",
        "NEURACRM_ALERT_WEBHOOK_RETRIES",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = get_settings()
    assert settings.alert_webhook_url is None
    assert settings.alert_escalate_after_minutes == 30
    assert settings.alert_webhook_retries == 3
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_URL", "https://hooks.example.com/x")
    monkeypatch.setenv("NEURACRM_ALERT_ESCALATE_MINUTES", "5")
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_RETRIES", "1")
    reset_settings()
    settings = get_settings()
    assert settings.alert_webhook_url == "https://hooks.example.com/x"
    assert (settings.alert_escalate_after_minutes, settings.alert_webhook_retries) == (5, 1)


@pytest.mark.parametrize(("value", "problem"), [("2.5", "not a whole number"), ("0", "between 1 and 10")])
def test_bad_webhook_retries_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("NEURACRM_ALERT_WEBHOOK_RETRIES", value)
    with pytest.raises(ConfigurationError, match=f"NEURACRM_ALERT_WEBHOOK_RETRIES={value!r} .*{problem}"):
        get_settings()
