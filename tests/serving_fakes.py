"""In-process stand-ins for the serving library's tests: just enough of MLflow's registry client for
LiveModels, and a forecast predictor on it (tests/unit/test_serving_core.py and
tests/integration/test_prediction_log.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.inference.forecast_cache import ForecastCache
from neuracrm_mlops.inference.live_models import LiveModels
from neuracrm_mlops.inference.prediction_log import PredictionLogWriter
from neuracrm_mlops.inference.predictor import Predictor
from neuracrm_mlops.models.lead_scoring_model import RuleScorer, compile_scorer
from neuracrm_mlops.models.sentiment_model import VaderScorer
from neuracrm_mlops.store.db.engine import DependencyState, track_database_health


@dataclass
class FakeModel:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


class FakeRegistry:
    """Just enough of MlflowClient for LiveModels: aliases and tags per registered model."""

    def __init__(self) -> None:
        self.models: dict[str, FakeModel] = {}
        self.down = False

    def get_registered_model(self, name: str) -> FakeModel:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if self.down:
            raise ConnectionError("registry unreachable")
        if name not in self.models:
            raise MlflowException(f"{name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.models[name]

    def search_registered_models(self, filter_string: str, max_results: int, page_token: Any) -> Any:
        if self.down:
            raise ConnectionError("registry unreachable")

        class Page(list[FakeModel]):
            token = None

        prefix = filter_string.split("'")[1].rstrip("%")
        return Page(m for m in self.models.values() if m.name.startswith(prefix))


def _no_load_expected(name: str, version: str) -> Any:
    raise AssertionError(f"no model load expected, got {name} v{version}")


def forecast_predictor(engine: sa.Engine, fake: FakeRegistry, tmp_path: Path) -> Predictor:
    live = LiveModels(_no_load_expected, eager_names=[], poll_seconds=0.05, client_factory=lambda: fake)
    return Predictor(
        engine=engine,
        live=live,
        log_writer=PredictionLogWriter(engine, spill_dir=tmp_path / "spill"),
        cache=ForecastCache(None),
        rule_scorer=compile_scorer(RuleScorer()),
        vader=VaderScorer(),
        forecast_load_wait_seconds=10.0,
        retry_after_seconds=9,
        database=track_database_health(engine, DependencyState("database")),
    )
