"""Registered models pickle the family classes under the families' public faces (``models/pickling.py``):
``neuracrm_mlops.models.forecasting_model`` and ``neuracrm_mlops.models.lead_scoring_model``, the paths
every version registered before the families became packages was saved under, whichever module of
the package defines the class."""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

import numpy as np
import pandas as pd

from neuracrm_mlops.models import forecasting_model as fm
from neuracrm_mlops.models import lead_scoring_model as lsm
from neuracrm_mlops.models.pickling import FORECASTING, LEAD_SCORING, PICKLED
from neuracrm_mlops.store.synthetic import generate_crm

FACES = (FORECASTING, LEAD_SCORING)


class _Recording(pickle._Unpickler):  # the pure-Python unpickler: its find_class sees every global
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.globals: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.globals.add(f"{module}.{name}")
        return super().find_class(module, name)


def project_globals(obj: Any) -> set[str]:
    """The project's classes and functions a pickle of ``obj`` names (``module.qualname``)."""
    unpickler = _Recording(pickle.dumps(obj))
    unpickler.load()
    return {g for g in unpickler.globals if g.startswith("neuracrm_mlops.")}


def test_every_pickled_class_is_exported_by_its_public_face() -> None:
    assert {cls.__name__ for cls in PICKLED} == {
        "ForecastConfig", "ModelScore", "BacktestReport", "FittedForecaster", "LeadModelConfig",
        "LinearInputs", "LinearBoostedClassifier", "TextSignal", "FeatureSpec", "RuleScorer",
        "BaseRateScorer", "LeadScoringModel",
    }  # fmt: skip
    for cls in PICKLED:
        assert cls.__module__ in FACES, cls
        assert getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls


def test_trained_family_objects_name_only_the_public_faces() -> None:
    months = np.arange(36)
    history = pd.Series(
        1000.0 + 50.0 * np.sin(months / 12 * 2 * np.pi) + months,
        index=pd.period_range("2021-01", periods=36, freq="M"),
    )
    forecaster = fm.train(history, fm.ForecastConfig(models=("linear", "seasonal_naive")))
    crm = generate_crm(8, 12, 1)
    leads = crm.leads[crm.leads["converted"].notna()].reset_index(drop=True)
    labels = leads["converted"].astype(bool)
    model = lsm.train(leads, labels)
    assert model.spec.text  # the text signal's estimator is in the pickle too

    assert project_globals(forecaster) == {
        f"{FORECASTING}.{name}"
        for name in ("FittedForecaster", "ForecastConfig", "BacktestReport", "ModelScore")
    }
    assert project_globals(model) == {
        f"{LEAD_SCORING}.{name}"
        for name in (
            "LeadScoringModel", "FeatureSpec", "LeadModelConfig", "LinearBoostedClassifier", "LinearInputs",
            "TextSignal",
        )
    }  # fmt: skip
    assert project_globals(lsm.RuleScorer.fit(leads, labels)) == {f"{LEAD_SCORING}.RuleScorer"}
    assert project_globals(lsm.BaseRateScorer.fit(labels)) == {f"{LEAD_SCORING}.BaseRateScorer"}
    restored = pickle.loads(pickle.dumps(model))
    assert lsm.predict(restored, leads.head(20)) == lsm.predict(model, leads.head(20))
