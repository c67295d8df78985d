"""Settings: embedded defaults under NEURACRM_HOME, read when first used, clear errors."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neuracrm_mlops.config import (
    ENVIRONMENT_VARIABLES,
    get_settings,
    gx_root_from_environment,
    log_level_from_environment,
    reset_settings,
    serving_workers_from_environment,
)
from neuracrm_mlops.errors import ConfigurationError
from neuracrm_mlops.store.db.engine import normalize_url


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


def test_the_replica_name_defaults_to_hostname_and_port_or_comes_from_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from neuracrm_mlops.inference.predictor import replica_name

    monkeypatch.delenv("NEURACRM_REPLICA_NAME", raising=False)
    assert get_settings().replica_name is None
    assert replica_name(None, 3001) == f"{socket.gethostname()}:3001"
    assert replica_name(None, None) == socket.gethostname()
    monkeypatch.setenv("NEURACRM_REPLICA_NAME", " prediction-7f9c:3000 ")
    reset_settings()
    assert get_settings().replica_name == "prediction-7f9c:3000"
    assert replica_name(get_settings().replica_name, 3001) == "prediction-7f9c:3000"


@pytest.mark.parametrize("value", ["two words", "x" * 129, "caf\u00e9"])
def test_a_replica_name_that_cannot_be_a_header_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NEURACRM_REPLICA_NAME", value)
    with pytest.raises(ConfigurationError, match=r"NEURACRM_REPLICA_NAME=.*visible ASCII characters"):
        get_settings()


# --- one settings object: nothing else reads NEURACRM_ variables --------------------------------

REPO = Path(__file__).resolve().parents[2]
SCANNED_FOLDERS = ("src", "serving", "dags", "plugins", "models")
CONFIG_PY = Path("src/neuracrm_mlops/config.py")
# (file, function) allowed to read environment variables by a computed name. demo.demo_pacing shortens
# the demo's waits: it reads NEURACRM_MODEL_POLL_SECONDS, NEURACRM_BAKE_POKE_SECONDS,
# NEURACRM_MONITOR_WINDOW_HOURS, NEURACRM_RETRY_DELAY_SECONDS, NEURACRM_LOG_LEVEL (and, for `demo --voice`,
# NEURACRM_RETELL_API_KEY and NEURACRM_MIN_OUTCOMES) only to let a value already set win and to restore
# them afterwards; it never interprets one: it sets them for its own
# process (then reset_settings, so Settings parses them) and the processes it starts.
DYNAMIC_READS_ALLOWED = {(Path("src/neuracrm_mlops/ops/demo.py"), "demo_pacing")}


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads(source: str) -> list[tuple[int, str | None, str]]:
    """(line, enclosing function or None, name) of every read of an environment variable: os.getenv,
    os.environ.get / setdefault, os.environ[...] (loaded) and `... in os.environ`. The name is the
    string literal or module-level string constant, else "<computed>"."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def name_of(expr: ast.expr) -> str:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name) and expr.id in constants:
            return constants[expr.id]
        return "<computed>"

    reads: list[tuple[int, str | None, str]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            if (func.attr in ("get", "setdefault") and _is_os_environ(func.value)) or (
                func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            ):
                key = node.args[0]
        elif (
            isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value)
        ):
            key = node.slice
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            and any(_is_os_environ(c) for c in node.comparators)
        ):
            key = node.left
        if key is not None:
            reads.append((getattr(node, "lineno", 0), function, name_of(key)))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return reads


def settings_read_outside_config(sources: dict[Path, str]) -> list[str]:
    """Every read of a NEURACRM_ variable (or of a computed name) outside config.py, as "file:line"."""
    found = []
    for path, source in sorted(sources.items()):
        if path == CONFIG_PY:
            continue
        for line, function, name in environment_reads(source):
            if name.startswith("NEURACRM_"):
                found.append(f"{path}:{line} reads {name} (add it to config.Settings instead)")
            elif name == "<computed>" and (path, function) not in DYNAMIC_READS_ALLOWED:
                found.append(f"{path}:{line} reads an environment variable by a computed name")
    return found


def platform_sources() -> dict[Path, str]:
    return {
        path.relative_to(REPO): path.read_text()
        for folder in SCANNED_FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
    }


def test_no_neuracrm_variable_is_read_outside_the_settings_object() -> None:
    sources = platform_sources()
    assert CONFIG_PY in sources and len(sources) > 20
    assert settings_read_outside_config(sources) == []


def test_the_scan_reports_a_setting_read_elsewhere() -> None:
    source = (
        "import os\n"
        "WORKERS = 'NEURACRM_SERVING_WORKERS'\n"
        "def f(name):\n"
        "    a = os.environ.get('NEURACRM_LOG_LEVEL', 'WARNING')\n"
        "    b = int(os.getenv(WORKERS, '1'))\n"
        "    c = os.environ['NEURACRM_GIT_COMMIT'] if 'NEURACRM_GX_ROOT' in os.environ else None\n"
        "    os.environ['NEURACRM_HOME'] = '/x'  # a write: allowed\n"
        "    return os.environ.get(name), os.environ.get('PATH')\n"
    )
    found = settings_read_outside_config({Path("src/neuracrm_mlops/x.py"): source})
    assert sorted(line.split(" reads ")[1].split(" ")[0] for line in found) == [
        "NEURACRM_GIT_COMMIT",
        "NEURACRM_GX_ROOT",
        "NEURACRM_LOG_LEVEL",
        "NEURACRM_SERVING_WORKERS",
        "an",
    ], found
    assert sum("computed name" in line for line in found) == 1  # os.environ.get(name); PATH is no setting
    assert settings_read_outside_config({CONFIG_PY: source}) == []


# --- the settings that used to be read elsewhere ------------------------------------------------


def test_settings_formerly_read_elsewhere_are_fields_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEURACRM_LOG_LEVEL", "NEURACRM_GIT_COMMIT", "NEURACRM_GX_ROOT", "NEURACRM_SERVING_WORKERS"):
        assert name in ENVIRONMENT_VARIABLES
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    settings = get_settings()
    assert (settings.log_level, settings.git_commit, settings.gx_root, settings.serving_workers) == (
        "WARNING",
        None,
        None,
        1,
    )
    monkeypatch.setenv("NEURACRM_LOG_LEVEL", "debug")
    monkeypatch.setenv("NEURACRM_GIT_COMMIT", " 0123abcd ")
    monkeypatch.setenv("NEURACRM_GX_ROOT", "~/gx")
    monkeypatch.setenv("NEURACRM_SERVING_WORKERS", "4")
    reset_settings()
    settings = get_settings()
    assert (settings.log_level, settings.git_commit, settings.serving_workers) == ("DEBUG", "0123abcd", 4)
    assert settings.gx_root == Path("~/gx").expanduser().resolve() == gx_root_from_environment()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NEURACRM_SERVING_WORKERS",
            "many",
            "NEURACRM_SERVING_WORKERS='many' is not a whole number (accepted: ",
        ),
        ("NEURACRM_SERVING_WORKERS", "0", "NEURACRM_SERVING_WORKERS='0' must be between 1 and 256"),
        ("NEURACRM_GIT_COMMIT", "abc def", "NEURACRM_GIT_COMMIT='abc def' must be a commit id or tag"),
        (
            "NEURACRM_MIN_OUTCOMES",
            "abc",
            "NEURACRM_MIN_OUTCOMES='abc' is not a whole number (accepted: a whole",
        ),
        ("NEURACRM_IMPORT_CHUNK_ROWS", "0", "NEURACRM_IMPORT_CHUNK_ROWS='0' must be between 1 and"),
        ("NEURACRM_FORECAST_CHUNK_SIZE", "x", "NEURACRM_FORECAST_CHUNK_SIZE='x' is not a whole number"),
        ("NEURACRM_SHADOW_CANARY", "maybe", "NEURACRM_SHADOW_CANARY='maybe' must be on or off"),
        ("NEURACRM_RETRY_DELAY_SECONDS", "soon", "NEURACRM_RETRY_DELAY_SECONDS='soon' is not a whole number"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    reset_settings()
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_serving_workers_are_read_alone_for_the_service_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_MIN_OUTCOMES", "abc")  # another variable's bad value: not this one's
    monkeypatch.setenv("NEURACRM_SERVING_WORKERS", "3")
    assert serving_workers_from_environment() == 3
    monkeypatch.setenv("NEURACRM_SERVING_WORKERS", "300")
    with pytest.raises(ConfigurationError, match="NEURACRM_SERVING_WORKERS='300' must be between 1 and 256"):
        serving_workers_from_environment()


def test_a_bad_log_level_falls_back_to_warning_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURACRM_LOG_LEVEL", "verbose")
    level, note = log_level_from_environment()
    assert level == "WARNING"
    assert note == (
        "NEURACRM_LOG_LEVEL='verbose' is not a log level "
        "(accepted: DEBUG, INFO, WARNING, ERROR, CRITICAL); using WARNING"
    )
    reset_settings()
    assert get_settings().log_level == "WARNING"  # never fails the settings either
    monkeypatch.setenv("NEURACRM_LOG_LEVEL", " Info ")
    assert log_level_from_environment() == ("INFO", None)


def test_git_commit_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuracrm_mlops.store import registry

    monkeypatch.setenv("NEURACRM_GIT_COMMIT", "feedc0de")
    reset_settings()
    registry.git_commit.cache_clear()
    try:
        assert registry.git_commit() == "feedc0de"
    finally:
        registry.git_commit.cache_clear()


# --- a bad value never breaks the import of the DAG files ---------------------------------------

DAG_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import json
    import sys
    from pathlib import Path

    from airflow.sdk.definitions._internal.contextmanager import DagContext

    from neuracrm_mlops.config import get_settings
    from neuracrm_mlops.errors import ConfigurationError

    dags = {}
    for path in sorted(Path(sys.argv[1]).glob("*.py")):
        name = f"dag_file_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # as Airflow's DagBag does: DAGs made by a @dag function call register themselves here
        DagContext.current_autoregister_module_name = name
        DagContext.autoregistered_dags.clear()
        spec.loader.exec_module(module)
        dags[path.name] = sorted(
            (dag.dag_id, dag.default_args["retry_delay"].total_seconds())
            for dag, _ in DagContext.autoregistered_dags
        )
    try:
        get_settings()
        error = None
    except ConfigurationError as exc:
        error = str(exc)
    print(json.dumps({"dags": dags, "error": error}))
    """
)


def test_a_bad_retry_delay_lets_every_dag_file_import_and_fails_the_first_task(tmp_path: Path) -> None:
    import json

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEURACRM", "MLFLOW"))},
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "NEURACRM_HOME": str(tmp_path / "home"),
        "NEURACRM_RETRY_DELAY_SECONDS": "five minutes",
    }
    result = subprocess.run(
        [sys.executable, "-c", DAG_IMPORT_SCRIPT, str(REPO / "dags")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    dag_files = sorted(path.name for path in (REPO / "dags").glob("*.py"))
    assert sorted(report["dags"]) == dag_files
    assert all(report["dags"][name] for name in dag_files), report["dags"]  # each file defines its DAGs
    # parsed with the embedded default delay, and the parser's log says which value is bad
    assert {delay for found in report["dags"].values() for _, delay in found} == {300.0}
    logged = result.stdout + result.stderr
    assert "using default settings to parse the DAGs: NEURACRM_RETRY_DELAY_SECONDS='five minutes'" in logged
    assert logged.count("using default settings to parse the DAGs") == 1  # once, not per DAG
    # the first task that reads the settings fails with the one clear error
    assert report["error"] == (
        "NEURACRM_RETRY_DELAY_SECONDS='five minutes' is not a whole number "
        "(accepted: a whole number between 0 and 86400)"
    )
