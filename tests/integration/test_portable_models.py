"""A registered lead model serves outside the checkout: ``mlflow models serve`` in a fresh venv made
from the locked requirements plus the wheel the version ships, run from a directory outside the
repository with no path to its sources, answers as the library and the service do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from serving_support import REPO, free_port

from neuracrm_mlops.config import get_settings, reset_settings
from neuracrm_mlops.store import registry
from neuracrm_mlops.training import packaging as model_packaging
from neuracrm_mlops.training.train import Lineage, train_lead_scoring

INSTALL_BUDGET_SECONDS = 180.0


def _uv() -> str | None:
    local = REPO / ".tools" / "bin" / "uv"
    return str(local) if local.is_file() else shutil.which("uv")


@pytest.fixture
def champion(seeded: sa.Engine) -> sa.Engine:
    """A small seeded CRM on SQLite with a trained lead model as ``lead_scoring@champion``."""
    outcome = train_lead_scoring(Lineage(run_key="portable/1"), engine=seeded)
    assert outcome.version is not None and outcome.status == "challenger", outcome.reason
    registry.configure_mlflow().set_registered_model_alias(registry.LEAD_MODEL, "champion", outcome.version)
    return seeded


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    directory = tmp_path / "outside"
    directory.mkdir()
    assert REPO not in directory.parents
    return directory


def _clean_env(venv: Path, tracking_uri: str) -> dict[str, str]:
    """No path to the checkout: the venv's bin first, no PYTHONPATH, bytecode written (the proof)."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_REGISTRY_URI"] = tracking_uri
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture
def served(champion: sa.Engine, outside: Path) -> Iterator[tuple[str, Path, dict[str, float]]]:
    """``mlflow models serve -m models:/lead_scoring@champion --env-manager local`` from a venv with the
    locked requirements and the version's shipped wheel; yields (base URL, site-packages, timings)."""
    import mlflow

    uv = _uv()
    if uv is None:
        pytest.skip("uv is not available to build the venv")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    version = registry.alias_version(registry.configure_mlflow(), registry.LEAD_MODEL, "champion")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{registry.LEAD_MODEL}/{version.version}"))
    wheel = local / version.tags[model_packaging.WHEEL_ARTIFACT]
    assert wheel.is_file(), sorted(p.name for p in local.rglob("*"))
    requirements = outside / "requirements.lock.txt"
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    requirements.write_text(exported.stdout)
    venv = outside / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(requirements),
            str(wheel),
        ],
        cwd=outside,
        check=True,
        timeout=600,
    )
    timings["venv_install_seconds"] = time.perf_counter() - started
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            cwd=outside,
        ).stdout.strip()
    )
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.pth.neuracrm*"))
    port = free_port()
    env = _clean_env(venv, get_settings().mlflow_tracking_uri)
    log = (outside / "serve.log").open("w")
    process = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{registry.LEAD_MODEL}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=outside,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow models serve did not start:\n{(outside / 'serve.log').read_text()[-4000:]}"
                )
            time.sleep(0.5)
        timings["ready_seconds"] = time.perf_counter() - started
        yield url, site, timings
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_the_champion_serves_from_its_shipped_wheel_outside_the_checkout(
    served: tuple[str, Path, dict[str, float]],
) -> None:
    from neuracrm_mlops.inference.predictor import load_servable

    url, site, timings = served
    installed = site / "neuracrm_mlops"
    lead = dict(model_packaging.LEAD_EXAMPLE)
    partial = {
        "industry": "software",
        "email_opens": 2,
        "crm_only_field": "x",
        "attributes": {"tier": "gold"},
    }

    response = httpx.post(
        f"{url}/invocations",
        json={"dataframe_records": [lead, partial], "params": {"explain": False}},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    client = registry.configure_mlflow()
    version = str(registry.alias_version(client, registry.LEAD_MODEL, "champion").version)
    expected = load_servable(registry.LEAD_MODEL, version).predict([lead, partial])  # as the service does
    assert [round(a["probability"], 6) for a in answers] == [round(e["probability"], 6) for e in expected]
    assert [a["factors"] for a in answers] == [[], []]  # the params reached the pyfunc
    with_factors = httpx.post(f"{url}/invocations", json={"dataframe_records": [lead]}, timeout=60).json()
    assert len(with_factors["predictions"][0]["factors"]) == 3
    # the served process imported the package from the venv the wheel was installed into (uv does not
    # compile bytecode at install time: these .pyc files were written by the imports of the server)
    compiled = {p.name.split(".")[0] for p in installed.rglob("__pycache__/*.pyc")}
    assert {"pyfunc_wrappers", "lead_scoring_model"} <= compiled, sorted(compiled)
    assert REPO not in installed.parents
    assert timings["venv_install_seconds"] < INSTALL_BUDGET_SECONDS, timings
    print(f"portable serve timings: {timings}")


def test_the_project_wheel_is_reproducible_complete_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    monkeypatch.setenv("NEURACRM_HOME", str(tmp_path / "home"))
    reset_settings()
    wheel = model_packaging.project_wheel()
    assert wheel.parent.parent == tmp_path / "home" / "wheels"
    assert model_packaging.project_wheel() == wheel  # cached per content
    files = model_packaging.package_files()
    again = model_packaging.write_wheel(tmp_path, files, wheel.name.split("-")[1])
    assert again.read_bytes() == wheel.read_bytes()  # reproducible
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "models/pyfunc_wrappers.py",
        "models/lead_scoring_model.py",
        "models/lead_scoring/lean.py",
        "models/forecasting/candidates.py",
        "serving/service.py",
        "ops/cli.py",
        "ops/templates/health/page.html.j2",
    ):
        assert f"neuracrm_mlops/{module}" in names
    assert "neuracrm_mlops/store/db/migrations/script.py.mako" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    version = wheel.name.split("-")[1]
    assert version == f"{model_packaging.package_version()}+{model_packaging.content_hash(files)}"
    metadata = zipfile.ZipFile(wheel).read(f"neuracrm_mlops-{version}.dist-info/METADATA").decode()
    assert "Name: neuracrm-mlops" in metadata and "Requires-Dist: mlflow" in metadata


def test_the_lead_signature_accepts_partial_leads_and_drops_unknown_columns() -> None:
    import pandas as pd
    from mlflow.models.utils import _enforce_schema

    signature = model_packaging.lead_signature({"explain": True})
    leads = pd.DataFrame(
        [{"industry": "software", "company_employees": "12", "crm_only": 1, "attributes": {"a": 1}}, {}]
    )
    enforced = _enforce_schema(leads, signature.inputs)
    assert list(enforced.columns) == ["company_employees", "industry", "attributes"]
    assert enforced["attributes"].iloc[0] == {"a": 1} and enforced["company_employees"].iloc[0] == "12"
    assert [p.name for p in signature.params] == ["explain"]
