"""The parts of forecast training that the worker processes and the registering process split."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from neuracrm_mlops.models.forecasting_model import ForecastConfig, train
from neuracrm_mlops.store import registry
from neuracrm_mlops.store.seeding import seed_database
from neuracrm_mlops.training.backtest_chart import nice_ticks, save_backtest_chart
from neuracrm_mlops.training.forecasts import EXPERIMENT, fit_organizations, plan_forecast_chunks


def _version(number: int, semver: str, schema: str = "s", params: str = "p") -> SimpleNamespace:
    return SimpleNamespace(
        version=str(number), tags={"semver": semver, "schema_hash": schema, "params_hash": params}
    )


def test_semantic_version_follows_the_latest_version_not_the_listing_order() -> None:
    versions = [_version(2, "1.0.1"), _version(10, "1.2.0"), _version(9, "1.1.4")]
    assert registry.semantic_version_after([], "s", "p") == "1.0.0"
    assert registry.semantic_version_after(versions, "s", "p") == "1.2.1"  # new data only
    assert registry.semantic_version_after(versions, "s", "other") == "1.3.0"  # parameters changed
    assert registry.semantic_version_after(versions, "other", "p") == "2.0.0"  # input schema changed


def test_plan_creates_the_mlflow_experiment_before_the_chunks_fan_out(engine: sa.Engine) -> None:
    seed_database(7, 24, 3, engine=engine)
    client = registry.configure_mlflow()
    assert client.get_experiment_by_name(EXPERIMENT) is None

    chunks = plan_forecast_chunks(3, engine=engine)

    assert chunks == [[1, 2, 3], [4, 5], [6, 7]]  # chunks of near-equal size, at most 3 each
    assert client.get_experiment_by_name(EXPERIMENT) is not None
    assert plan_forecast_chunks(3, max_chunks=2, engine=engine) == [[1, 2, 3, 4], [5, 6, 7]]  # the cap binds
    with pytest.raises(ValueError, match="must be at least 1"):
        plan_forecast_chunks(-1, engine=engine)


def test_fit_organizations_stages_each_pyfunc_without_project_files(
    engine: sa.Engine, tmp_path: Path
) -> None:
    seed_database(3, 24, 5, engine=engine)
    with engine.begin() as conn:  # organization 3 loses its sales history
        conn.execute(sa.text("DELETE FROM monthly_sales WHERE organization_id = 3"))

    staging = tmp_path / "staging"
    staging.mkdir()

    chunk = fit_organizations([1, 2, 3], staging, engine=engine)

    assert [fit.organization_id for fit in chunk.fits] == [1, 2]
    assert chunk.without_history == [3]
    assert sorted(p.name for p in staging.iterdir()) == ["org_1", "org_2"]  # no state file left behind
    for organization_id in (1, 2):
        staged = staging / f"org_{organization_id}"
        assert (staged / "MLmodel").is_file() and (staged / "backtest.svg").is_file()
        assert not (staged / "uv.lock").exists() and not (staged / "pyproject.toml").exists()


def test_backtest_chart_is_an_svg_covering_history_forecast_and_bands(tmp_path: Path) -> None:
    months = pd.period_range("2022-01", periods=36, freq="M")
    rng = np.random.default_rng(1)
    history = pd.Series(50_000 + 500 * np.arange(36) + rng.normal(0, 900, 36), index=months)
    fitted = train(history, ForecastConfig(models=("seasonal_naive", "theta", "linear")))

    path = save_backtest_chart(tmp_path / "backtest.svg", history, fitted)

    root = ElementTree.parse(path).getroot()  # well-formed
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polygon")) == 2  # the 95% and 80% bands
    actual, forecast = root.findall(f"{ns}polyline")
    assert len(actual.get("points", "").split()) == 36
    assert len(forecast.get("points", "").split()) == fitted.max_horizon
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert texts[0] == f"backtest accuracy {fitted.backtest.ensemble.accuracy:.3f} (full)"
    assert {"2022", "2023", "2024", "revenue", "80%", "95%"} <= set(texts)
    every_y = [float(p.split(",")[1]) for line in (actual, forecast) for p in line.get("points", "").split()]
    assert min(every_y) >= 34 and max(every_y) <= 340 - 40  # inside the plot area


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 4_400) == [0, 2_000, 4_000, 6_000]
    assert nice_ticks(0, 97) == [0, 25, 50, 75, 100]
    assert nice_ticks(-120, 30) == [-150, -100, -50, 0, 50]
    assert nice_ticks(5, 5) == [4, 6, 8, 10]  # a flat series still gets an axis
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0, float("nan"))


@pytest.mark.slow
def test_forecast_versions_are_logged_models_sharing_the_chunk_runs_wheel(engine: sa.Engine) -> None:
    """Each organization's forecast is a LoggedModel of the chunk's run (registered from
    ``models:/m-...``, with its signature and input example); the project's wheel is logged once in
    the run's ``environment/`` and named by every version; the chunk's data is a run input."""
    import mlflow

    from neuracrm_mlops.training import packaging as model_packaging
    from neuracrm_mlops.training.forecasts import train_forecast_chunk
    from neuracrm_mlops.training.train import Lineage

    seed_database(2, 24, 3, engine=engine)
    summary = train_forecast_chunk([1, 2], Lineage(run_key="forecast/1"), engine=engine, plots=False)

    client = registry.configure_mlflow()
    versions = [
        client.get_model_version(o["model_name"], o["version"]) for o in summary.organizations if o["version"]
    ]
    assert len(versions) == 2 and len({v.run_id for v in versions}) == 1
    run_id = versions[0].run_id
    wheel_uri = versions[0].tags[model_packaging.WHEEL_ARTIFACT]
    assert wheel_uri.startswith(f"runs:/{run_id}/environment/neuracrm_mlops-") and wheel_uri.endswith(".whl")
    assert {v.tags[model_packaging.WHEEL_ARTIFACT] for v in versions} == {wheel_uri}
    assert Path(mlflow.artifacts.download_artifacts(wheel_uri)).is_file()
    for version in versions:
        assert version.source.startswith("models:/m-"), version.source
        model = client.get_logged_model(version.source.removeprefix("models:/"))
        assert model.source_run_id == run_id and model.status.to_int() == 2  # READY
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
        assert not list(local.rglob("*.whl"))  # the wheel is shared, not copied per organization
        info = mlflow.models.get_model_info(f"models:/{version.name}/{version.version}")
        assert info.signature is not None and info.signature.inputs.input_names() == ["months"]
        assert info.model_id == model.model_id
        served = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
        assert len(served.predict(model_packaging.forecast_input_example())) == 2
    (dataset,) = client.get_run(run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "monthly_sales_orgs_1-2" and dataset.dataset.digest
