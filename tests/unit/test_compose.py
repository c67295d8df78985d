"""The production stack: docker-compose.yml, .env.example and docker/Dockerfile agree with each other and
with the settings the platform reads.

The stack is validated, not run (no Docker engine is needed): `docker-compose config` (Debian's
docker-compose package) checks the file against the Compose schema and resolves it with a copy of
.env.example; the checks below read its output. Each check returns the problems it found, so the
negative tests can show that it reports a broken copy.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
import posixpath
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from neuracrm_mlops.config import ENVIRONMENT_VARIABLES, Settings

# module-scoped fixtures, made once: the module runs on one worker
pytestmark = pytest.mark.xdist_group("compose")

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
POSTGRES_INIT = REPO / "docker" / "postgres-init"
CONFIG_PY = REPO / "src" / "neuracrm_mlops" / "config.py"
PLATFORM_SOURCES = ("src/neuracrm_mlops", "models", "serving", "dags", "plugins")

AIRFLOW_SERVICES = {
    "airflow-init": ["airflow", "db", "migrate"],
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker": ["airflow", "celery", "worker"],
}
NGINX_CONF = REPO / "docker" / "nginx" / "prediction.conf"
# environment variables holding URLs of services inside the stack
INTERNAL_URL_VARIABLES = (
    "NEURACRM_DB_URL",
    "MLFLOW_TRACKING_URI",
    "NEURACRM_REDIS_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
)
# the container port each published service listens on (the platform's defaults and the README)
PUBLISHED_PORTS = {"prediction-proxy": 3000, "mlflow": 5000, "airflow-apiserver": 8080}
SECRET_NAME = re.compile(r"PASSWORD$|SECRET|FERNET_KEY")
POSTGRES_DRIVERS = {
    "postgresql+psycopg": "psycopg",
    "postgresql+psycopg2": "psycopg2",
    "postgresql": "psycopg2",
}
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z0-9_]+:\?[^}]*\}")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class ComposeError(Exception):
    """`docker-compose config` refused the file; the message is its output."""


# --- reading the files ---------------------------------------------------------------------------


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated: "
            "run `apt-get install -y --no-install-recommends docker-compose` (no Docker engine is needed)"
        )
    return exe


def compose_config(compose_file: Path, env_file: Path, home: Path) -> dict[str, Any]:
    """`docker-compose config` on COMPOSE_FILE with ENV_FILE only (not the caller's environment)."""
    result = subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "--file", str(compose_file), "config"],
        cwd=compose_file.parent,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise ComposeError(result.stderr.strip() or result.stdout.strip())
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and config.get("services"), result.stdout
    return config


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def compose_variables(raw: dict[str, Any]) -> dict[str, set[str]]:
    """Variable name -> how the file interpolates it: "required" (${X:?msg}), "default" (${X:-d}), "plain"."""
    found: dict[str, set[str]] = {}
    for text in strings(raw):
        for match in VARIABLE.finditer(text.replace("$$", "")):
            name = match.group(1) or match.group(4)
            operator = match.group(2) or ""
            form = "required" if "?" in operator else "default" if "-" in operator else "plain"
            found.setdefault(name, set()).add(form)
    return found


def env_example(text: str) -> dict[str, tuple[str, str]]:
    """.env.example: variable -> (value, the comment line right above it, "" if none)."""
    entries: dict[str, tuple[str, str]] = {}
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition("=")
            entries[name.strip()] = (value.strip(), previous)
        previous = stripped if stripped.startswith("#") else ""
    return entries


def environment_reads(source: str) -> set[str]:
    """Names passed to os.environ.get / os.environ[...] / os.getenv / config's _env_* helpers, as string
    literals or module-level string constants."""
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})

    def literal(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        return constants.get(expr.id) if isinstance(expr, ast.Name) else None

    def is_os_environ(expr: ast.expr) -> bool:
        return (
            isinstance(expr, ast.Attribute)
            and expr.attr == "environ"
            and isinstance(expr.value, ast.Name)
            and expr.value.id == "os"
        )

    names: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                (
                    isinstance(func, ast.Attribute)
                    and func.attr in ("get", "setdefault")
                    and is_os_environ(func.value)
                )
                or (
                    isinstance(func, ast.Attribute)
                    and func.attr == "getenv"
                    and isinstance(func.value, ast.Name)
                )
                or (isinstance(func, ast.Name) and func.id.startswith("_env_"))
            ):
                names.add(literal(node.args[0]))
        elif isinstance(node, ast.Subscript) and is_os_environ(node.value):
            names.add(literal(node.slice))
    return {name for name in names if name}


def platform_environment_variables() -> set[str]:
    """What the platform reads: Settings.from_environment (config.ENVIRONMENT_VARIABLES; no NEURACRM_
    variable is read anywhere else, tests/unit/test_config.py checks that) and the other variables
    the platform's code reads (PATH, OMP_NUM_THREADS, ...)."""
    names = set(ENVIRONMENT_VARIABLES)
    for folder in PLATFORM_SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            read = environment_reads(path.read_text())
            names |= {name for name in read if not name.startswith("NEURACRM_")}
    return names


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def port_mappings(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(published host port or None, container port) of a service's `ports` and `expose`."""
    mappings: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            mappings.append((int(published) if published is not None else None, int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            mappings.append((int(parts[-2]) if len(parts) > 1 else None, int(parts[-1])))
    mappings.extend((None, int(str(port).split("/")[0])) for port in service.get("expose", []))
    return mappings


def listen_ports(service: dict[str, Any]) -> set[int]:
    return {container for _, container in port_mappings(service)}


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_test(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def postgres_init_databases() -> dict[str, str]:
    """Databases the postgres init scripts create -> their owner."""
    text = "\n".join(path.read_text() for path in sorted(POSTGRES_INIT.iterdir()) if path.is_file())
    return dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", text))


# --- the checks: each returns its problems -------------------------------------------------------


def settings_list_problems(config_source: str) -> list[str]:
    read = environment_reads(config_source)
    listed = set(ENVIRONMENT_VARIABLES)
    return [
        f"config.py reads {name} but ENVIRONMENT_VARIABLES does not list it" for name in sorted(read - listed)
    ] + [f"ENVIRONMENT_VARIABLES lists {name} but config.py never reads it" for name in sorted(listed - read)]


def platform_variable_problems(
    resolved: dict[str, Any], used: dict[str, set[str]], dockerfile: str, known: set[str]
) -> list[str]:
    names = dict.fromkeys(used, "a ${...} in docker-compose.yml")
    for service_name, service in resolved["services"].items():
        names.update(dict.fromkeys(service.get("environment") or {}, f"service {service_name}"))
    for keyword, rest in dockerfile_instructions(dockerfile):
        if keyword in ("ENV", "ARG"):
            for token in shlex.split(rest):
                names[token.split("=", 1)[0]] = f"docker/Dockerfile {keyword}"
    return [
        f"{where} sets {name}, which the platform does not read (neuracrm_mlops.config / os.environ)"
        for name, where in sorted(names.items())
        if (name.startswith("NEURACRM_") or name == "MLFLOW_TRACKING_URI") and name not in known
    ]


def env_example_problems(used: dict[str, set[str]], example: dict[str, tuple[str, str]]) -> list[str]:
    problems = [
        f"docker-compose.yml uses ${{{name}}}, missing from .env.example"
        for name in sorted(set(used) - set(example))
    ]
    problems += [
        f".env.example lists {name}, which docker-compose.yml never uses"
        for name in sorted(set(example) - set(used))
    ]
    problems += [
        f".env.example: {name} has no comment line above it"
        for name, (_, comment) in example.items()
        if not comment
    ]
    for name in sorted(name for name in used if SECRET_NAME.search(name)):
        if used[name] != {"required"}:
            problems.append(
                f"secret {name} must be interpolated as ${{{name}:?message}} everywhere (no default)"
            )
        if name in example and "change-me" not in example[name][0]:
            problems.append(f".env.example: secret {name} must hold a change-me placeholder")
    return problems


def hard_coded_secret_problems(raw: dict[str, Any]) -> list[str]:
    problems = []
    for text in strings(raw):
        for password in re.findall(r"://[^/\s:@]+:(\$\{[^}]*\}|[^@\s/]+)@", text):
            if not REQUIRED_VARIABLE.fullmatch(password):
                problems.append(f"password written into a URL instead of ${{VAR:?...}}: {text}")
    for service_name, service in raw["services"].items():
        environment = service.get("environment") or {}
        for name, value in environment.items() if isinstance(environment, dict) else []:
            if SECRET_NAME.search(name) and not REQUIRED_VARIABLE.fullmatch(str(value)):
                problems.append(f"service {service_name}: {name} is not taken from the environment")
    return problems


def internal_urls(resolved: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(service, what, URL) of every URL the services use to reach each other."""
    for service_name, service in resolved["services"].items():
        environment = service.get("environment") or {}
        for name in INTERNAL_URL_VARIABLES:
            if environment.get(name):
                yield service_name, name, str(environment[name])
        args = command_args(service)
        for flag in ("--backend-store-uri", "--registry-store-uri"):
            if flag in args:
                yield service_name, flag, args[args.index(flag) + 1]


def url_problems(resolved: dict[str, Any]) -> list[str]:
    services = resolved["services"]
    databases = postgres_init_databases()
    problems = []
    for service_name, what, url in internal_urls(resolved):
        parts = urlsplit(url.removeprefix("db+"))
        where = f"service {service_name}: {what}={url}"
        if parts.hostname not in services:
            problems.append(f"{where}: host {parts.hostname!r} is not a service of docker-compose.yml")
            continue
        if parts.port not in listen_ports(services[parts.hostname]):
            problems.append(
                f"{where}: port {parts.port} is not a port service {parts.hostname} listens on "
                f"({sorted(listen_ports(services[parts.hostname]))})"
            )
        if parts.scheme.startswith("postgresql"):
            module = POSTGRES_DRIVERS.get(parts.scheme)
            if module is None or importlib.util.find_spec(module) is None:
                problems.append(f"{where}: driver {parts.scheme!r} is not installed from uv.lock")
            database = parts.path.lstrip("/")
            if databases.get(database) != parts.username:
                problems.append(
                    f"{where}: docker/postgres-init creates no database {database} owned by {parts.username}"
                )
    for service_name, service in services.items():
        for port in re.findall(r"https?://(?:localhost|127\.0\.0\.1):(\d+)", healthcheck_test(service)):
            if int(port) not in listen_ports(service):
                problems.append(
                    f"service {service_name}: the healthcheck calls port {port}, not one it listens on"
                )
    allowed = str(
        services.get("mlflow", {}).get("environment", {}).get("MLFLOW_SERVER_ALLOWED_HOSTS", "*")
    ).split(",")
    for service_name, what, url in internal_urls(resolved):
        netloc = urlsplit(url).netloc
        if what == "MLFLOW_TRACKING_URI" and not any(fnmatch(netloc, pattern) for pattern in allowed):
            problems.append(
                f"service {service_name}: MLflow refuses Host {netloc} (MLFLOW_SERVER_ALLOWED_HOSTS)"
            )
    expected = {"prediction": ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI", "NEURACRM_REDIS_URL")}
    expected |= dict.fromkeys(
        AIRFLOW_SERVICES, ("NEURACRM_DB_URL", "MLFLOW_TRACKING_URI", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    )
    for service_name, names in expected.items():
        environment = services.get(service_name, {}).get("environment") or {}
        problems += [
            f"service {service_name} does not set {name}" for name in names if not environment.get(name)
        ]
    return problems


def published_port_problems(resolved: dict[str, Any]) -> list[str]:
    services = resolved["services"]
    problems = []
    for service_name, port in PUBLISHED_PORTS.items():
        mappings = [m for m in port_mappings(services.get(service_name, {})) if m[0] is not None]
        if (port, port) not in mappings:
            problems.append(
                f"service {service_name} must publish container port {port} on host port {port}: {mappings}"
            )
    ui_url = urlsplit(
        str(services["airflow-scheduler"].get("environment", {}).get("NEURACRM_MLFLOW_UI_URL", ""))
    )
    default_ui = urlsplit(Settings.__dataclass_fields__["mlflow_ui_url"].default)
    for what, parts in (("NEURACRM_MLFLOW_UI_URL", ui_url), ("Settings.mlflow_ui_url's default", default_ui)):
        if parts.port != PUBLISHED_PORTS["mlflow"]:
            problems.append(
                f"{what} points at port {parts.port}, MLflow is published on {PUBLISHED_PORTS['mlflow']}"
            )
    return problems


def dependency_problems(resolved: dict[str, Any]) -> list[str]:
    services = resolved["services"]
    problems = []
    for service_name, service in services.items():
        depends_on = service.get("depends_on") or {}
        for target, rule in depends_on.items() if isinstance(depends_on, dict) else []:
            condition = (rule or {}).get("condition")
            target_service = services.get(target, {})
            test = (target_service.get("healthcheck") or {}).get("test")
            if condition == "service_healthy" and (not test or test in (["NONE"], "NONE")):
                problems.append(
                    f"{service_name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully" and target_service.get("restart", "no") != "no":
                problems.append(f"{service_name} waits for {target} to complete, but {target} restarts")
    return problems


def airflow_problems(resolved: dict[str, Any]) -> list[str]:
    services = resolved["services"]
    missing = [name for name in AIRFLOW_SERVICES if name not in services]
    if missing:
        return [f"Airflow services missing: {missing}"]
    problems = []
    images = {services[name].get("image") for name in AIRFLOW_SERVICES}
    if len(images) != 1 or services["mlflow"].get("image") not in images:
        problems.append(f"Airflow services and mlflow must share the platform image, found {images}")
    for name in AIRFLOW_SERVICES:
        if (services[name].get("build") or {}).get("dockerfile") != "docker/Dockerfile":
            problems.append(f"{name} is not built from docker/Dockerfile")
    reference = {
        k: v for k, v in services["airflow-init"]["environment"].items() if k.startswith("AIRFLOW__")
    }
    for name, command in AIRFLOW_SERVICES.items():
        environment = {
            k: v for k, v in services[name].get("environment", {}).items() if k.startswith("AIRFLOW__")
        }
        if environment != reference:
            differing = sorted(set(environment.items()) ^ set(reference.items()))
            problems.append(f"{name} has other AIRFLOW__ settings than airflow-init: {differing}")
        if command_args(services[name])[: len(command)] != command:
            problems.append(f"{name} does not run {' '.join(command)}")
        if name != "airflow-init":
            condition = (services[name].get("depends_on") or {}).get("airflow-init", {}).get("condition")
            if condition != "service_completed_successfully":
                problems.append(f"{name} must wait for airflow-init (service_completed_successfully)")
    problems += celery_problems(services, reference)
    return problems


def _replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def celery_problems(services: dict[str, Any], airflow: dict[str, str]) -> list[str]:
    """CeleryExecutor with a Redis broker that is not the forecast cache's database, results in the
    Airflow database, at least two workers, Flower behind a profile."""
    problems = []
    if airflow.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
        problems.append(
            f"executor is {airflow.get('AIRFLOW__CORE__EXECUTOR')}, the stack runs CeleryExecutor"
        )
    broker = urlsplit(airflow.get("AIRFLOW__CELERY__BROKER_URL", ""))
    cache = urlsplit(str(services["prediction"].get("environment", {}).get("NEURACRM_REDIS_URL", "")))
    if broker.scheme != "redis" or broker.hostname != "redis":
        problems.append(f"the Celery broker is not the redis service: {broker.geturl()!r}")
    elif (broker.hostname, broker.port, broker.path) == (cache.hostname, cache.port, cache.path):
        problems.append(f"the Celery broker shares the forecast cache's Redis database ({broker.path})")
    backend = airflow.get("AIRFLOW__CELERY__RESULT_BACKEND", "")
    if backend.removeprefix("db+") != airflow.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        problems.append(f"the Celery result backend is not the Airflow database: {backend!r}")
    if _replicas(services["airflow-worker"]) < 2:
        problems.append("airflow-worker runs fewer than two replicas")
    flower = services.get("flower")
    if flower is None or command_args(flower)[:3] != ["airflow", "celery", "flower"]:
        problems.append("no flower service running `airflow celery flower`")
    elif flower.get("profiles") != ["flower"]:
        problems.append(f"flower must start only with --profile flower, profiles: {flower.get('profiles')}")
    return problems


def prediction_replica_problems(resolved: dict[str, Any], nginx_conf: str) -> list[str]:
    """At least two prediction replicas, reachable only through prediction-proxy (nginx), whose
    configuration (mounted from docker/nginx) sends every request to the prediction service's port."""
    services = resolved["services"]
    prediction, proxy = services["prediction"], services.get("prediction-proxy")
    problems = []
    if _replicas(prediction) < 2:
        problems.append(f"prediction runs {_replicas(prediction)} replica(s), not two or more")
    if any(host is not None for host, _ in port_mappings(prediction)):
        problems.append("prediction replicas publish a host port; only prediction-proxy may")
    if proxy is None:
        return [*problems, "no prediction-proxy service in front of the replicas"]
    mounts = [
        str(volume.get("source", "")) if isinstance(volume, dict) else str(volume).split(":")[0]
        for volume in proxy.get("volumes", [])
    ]
    if not any(mount.endswith("docker/nginx/prediction.conf") for mount in mounts):
        problems.append(f"prediction-proxy does not mount docker/nginx/prediction.conf: {mounts}")
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx_conf, re.MULTILINE)
    if not servers or any(
        host != "prediction" or int(port) not in listen_ports(prediction) for host, port in servers
    ):
        problems.append(f"nginx upstream servers {servers} are not the prediction service's port")
    if listen_ports(proxy) != {int(n) for n in re.findall(r"^\s*listen\s+(\d+);", nginx_conf, re.MULTILINE)}:
        problems.append("prediction-proxy's exposed port is not the port nginx listens on")
    condition = (proxy.get("depends_on") or {}).get("prediction", {}).get("condition")
    if condition != "service_healthy":
        problems.append("prediction-proxy must wait for the prediction replicas to be healthy")
    return problems


def dockerfile_problems(dockerfile: str, dockerignore: str, resolved: dict[str, Any]) -> list[str]:
    instructions = dockerfile_instructions(dockerfile)
    problems = []
    if ("FROM", "python:3.11-slim") not in instructions:
        problems.append("docker/Dockerfile must start FROM python:3.11-slim")
    if not any(k == "RUN" and "uv sync --frozen --no-dev" in rest for k, rest in instructions):
        problems.append("docker/Dockerfile must install with `uv sync --frozen --no-dev` from uv.lock")
    workdir, env, copied = "/", {}, {}
    ignored = [
        line.strip() for line in dockerignore.splitlines() if line.strip() and not line.startswith("#")
    ]
    for keyword, rest in instructions:
        if keyword == "WORKDIR":
            workdir = rest
        elif keyword == "ENV":
            env.update(dict(token.split("=", 1) for token in shlex.split(rest)))
        elif keyword == "COPY" and "--from" not in rest:
            *sources, destination = [token for token in shlex.split(rest) if not token.startswith("--")]
            for source in sources:
                name = source.rstrip("/")
                if not (REPO / name).exists():
                    problems.append(f"docker/Dockerfile copies {source}, which is not in the repository")
                if any(fnmatch(name, pattern.rstrip("/")) for pattern in ignored):
                    problems.append(f"docker/Dockerfile copies {source}, which .dockerignore leaves out")
                # a folder's contents land in the destination, with or without a trailing slash
                copied[name] = posixpath.normpath(posixpath.join(workdir, destination))
    for variable, folder in (
        ("AIRFLOW__CORE__DAGS_FOLDER", "dags"),
        ("AIRFLOW__CORE__PLUGINS_FOLDER", "plugins"),
        ("NEURACRM_GX_ROOT", "expectations"),
    ):
        if env.get(variable) is None or env.get(variable) != copied.get(folder):
            problems.append(
                f"docker/Dockerfile: {variable}={env.get(variable)}, {folder}/ goes to {copied.get(folder)}"
            )
    mounts = {
        volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1]
        for name in AIRFLOW_SERVICES
        for volume in resolved["services"].get(name, {}).get("volumes", [])
    }
    for path in (f"{env.get('NEURACRM_GX_ROOT')}/uncommitted", env.get("NEURACRM_HOME"), "/opt/airflow/logs"):
        if path not in mounts:
            problems.append(f"the Airflow services mount no volume at {path} (written at run time)")
    return problems


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def env_file(home: Path) -> Path:
    path = home / "compose.env"
    shutil.copyfile(ENV_EXAMPLE, path)
    return path


@pytest.fixture(scope="module")
def resolved(env_file: Path, home: Path) -> dict[str, Any]:
    """docker-compose.yml as `docker-compose config` resolves it with .env.example's values."""
    try:
        return compose_config(COMPOSE_FILE, env_file, home)
    except ComposeError as exc:
        pytest.fail(f"docker-compose config rejects docker-compose.yml:\n{exc}")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def test_docker_compose_config_accepts_the_file_with_the_example_environment(
    resolved: dict[str, Any],
) -> None:
    assert {"postgres", "redis", "mlflow", "prediction", *AIRFLOW_SERVICES} <= set(resolved["services"])


def test_environment_variables_constant_lists_what_settings_read() -> None:
    assert settings_list_problems(CONFIG_PY.read_text()) == []


def test_compose_sets_only_variables_the_platform_reads(
    resolved: dict[str, Any], raw: dict[str, Any]
) -> None:
    problems = platform_variable_problems(
        resolved, compose_variables(raw), DOCKERFILE.read_text(), platform_environment_variables()
    )
    assert problems == []


def test_env_example_lists_exactly_the_variables_the_compose_file_uses(raw: dict[str, Any]) -> None:
    assert env_example_problems(compose_variables(raw), env_example(ENV_EXAMPLE.read_text())) == []


def test_no_secret_is_written_into_the_compose_file(raw: dict[str, Any]) -> None:
    assert hard_coded_secret_problems(raw) == []


def test_internal_urls_name_services_and_the_ports_they_listen_on(resolved: dict[str, Any]) -> None:
    assert url_problems(resolved) == []


def test_published_ports_match_the_platform_defaults(resolved: dict[str, Any]) -> None:
    assert published_port_problems(resolved) == []


def test_services_waited_for_have_healthchecks_or_run_once(resolved: dict[str, Any]) -> None:
    assert dependency_problems(resolved) == []


def test_airflow_services_share_one_image_and_their_settings(resolved: dict[str, Any]) -> None:
    assert airflow_problems(resolved) == []


def test_two_prediction_replicas_answer_behind_one_nginx_address(resolved: dict[str, Any]) -> None:
    assert prediction_replica_problems(resolved, NGINX_CONF.read_text()) == []


def _one_prediction_replica(config: dict[str, Any], conf: str) -> str:
    config["services"]["prediction"].pop("deploy")
    return conf


def _replica_published(config: dict[str, Any], conf: str) -> str:
    config["services"]["prediction"]["ports"] = [{"published": 3001, "target": 3000}]
    return conf


def _upstream_on_another_port(config: dict[str, Any], conf: str) -> str:
    return conf.replace("prediction:3000", "prediction:3001")


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_one_prediction_replica, "1 replica(s)"),
        (_replica_published, "publish a host port"),
        (_upstream_on_another_port, "are not the prediction service's port"),
    ],
)
def test_replica_checks_report_a_broken_setup(
    resolved: dict[str, Any], breakage: Callable[[dict[str, Any], str], str], expected: str
) -> None:
    broken = copy.deepcopy(resolved)
    problems = prediction_replica_problems(broken, breakage(broken, NGINX_CONF.read_text()))
    assert any(expected in problem for problem in problems), problems


def test_dockerfile_puts_dags_plugins_and_expectations_where_the_settings_point(
    resolved: dict[str, Any],
) -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text(), resolved) == []


# --- the checks fail on broken copies -----------------------------------------------------------


def test_a_url_host_that_is_not_a_service_is_reported(tmp_path: Path, env_file: Path, home: Path) -> None:
    text = COMPOSE_FILE.read_text()
    assert "@postgres:5432/crm" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("@postgres:5432/crm", "@db:5432/crm"))
    problems = url_problems(compose_config(broken, env_file, tmp_path))
    assert any("host 'db' is not a service" in problem for problem in problems), problems


def test_a_secret_missing_from_the_environment_stops_docker_compose(tmp_path: Path, home: Path) -> None:
    broken_env = tmp_path / "compose.env"
    broken_env.write_text(
        "".join(
            line
            for line in ENV_EXAMPLE.read_text().splitlines(True)
            if not line.startswith("CRM_DB_PASSWORD=")
        )
    )
    with pytest.raises(ComposeError, match=r"set CRM_DB_PASSWORD in \.env"):
        compose_config(COMPOSE_FILE, broken_env, tmp_path)


def _drop_mlflow_healthcheck(config: dict[str, Any]) -> None:
    del config["services"]["mlflow"]["healthcheck"]


def _wrong_mlflow_port(config: dict[str, Any]) -> None:
    config["services"]["prediction"]["environment"]["MLFLOW_TRACKING_URI"] = "http://mlflow:5001"


def _psycopg2_for_airflow(config: dict[str, Any]) -> None:
    environment = config["services"]["airflow-triggerer"]["environment"]
    environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
        "postgresql+psycopg2://airflow:x@postgres:5432/airflow"
    )


def _other_executor_for_one_service(config: dict[str, Any]) -> None:
    config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"


def _prediction_on_another_port(config: dict[str, Any]) -> None:
    config["services"]["prediction-proxy"]["ports"] = ["8000:3000"]


def _broker_on_the_cache_database(config: dict[str, Any]) -> None:
    for service in config["services"].values():
        environment = service.get("environment") or {}
        if "AIRFLOW__CELERY__BROKER_URL" in environment:
            environment["AIRFLOW__CELERY__BROKER_URL"] = "redis://redis:6379/0"


def _one_worker(config: dict[str, Any]) -> None:
    config["services"]["airflow-worker"]["deploy"] = {"replicas": 1}


@pytest.mark.parametrize(
    ("breakage", "check", "expected"),
    [
        (_drop_mlflow_healthcheck, dependency_problems, "mlflow has no healthcheck"),
        (_wrong_mlflow_port, url_problems, "port 5001 is not a port service mlflow listens on"),
        (_psycopg2_for_airflow, url_problems, "driver 'postgresql+psycopg2' is not installed"),
        (_other_executor_for_one_service, airflow_problems, "airflow-scheduler has other AIRFLOW__ settings"),
        (
            _prediction_on_another_port,
            published_port_problems,
            "prediction-proxy must publish container port 3000",
        ),
        (_broker_on_the_cache_database, airflow_problems, "shares the forecast cache's Redis database"),
        (_one_worker, airflow_problems, "airflow-worker runs fewer than two replicas"),
    ],
)
def test_checks_report_a_broken_stack(
    resolved: dict[str, Any],
    breakage: Callable[[dict[str, Any]], None],
    check: Callable[[dict[str, Any]], list[str]],
    expected: str,
) -> None:
    if expected.startswith("driver") and importlib.util.find_spec("psycopg2") is not None:
        pytest.fail("psycopg2 is installed now: pick another driver for this negative case")
    broken = copy.deepcopy(resolved)
    breakage(broken)
    problems = check(broken)
    assert any(expected in problem for problem in problems), problems


def test_unlisted_and_unused_variables_and_defaulted_secrets_are_reported(raw: dict[str, Any]) -> None:
    used = compose_variables(raw)
    example = env_example(ENV_EXAMPLE.read_text())
    del example["MLFLOW_PORT"]
    example["NEURACRM_UNUSED"] = ("1", "# not used")
    used["POSTGRES_PASSWORD"] = {"required", "default"}
    problems = env_example_problems(used, example)
    assert any("${MLFLOW_PORT}, missing from .env.example" in p for p in problems), problems
    assert any("NEURACRM_UNUSED, which docker-compose.yml never uses" in p for p in problems), problems
    assert any("secret POSTGRES_PASSWORD must be interpolated" in p for p in problems), problems


def test_a_hard_coded_password_is_reported(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    broken["services"]["prediction"]["environment"]["NEURACRM_DB_URL"] = (
        "postgresql://crm:hunter2@postgres:5432/crm"
    )
    assert any("hunter2" in problem for problem in hard_coded_secret_problems(broken))


def test_a_variable_the_platform_does_not_read_is_reported(resolved: dict[str, Any]) -> None:
    broken = copy.deepcopy(resolved)
    broken["services"]["prediction"]["environment"]["NEURACRM_SERVING_WORKER"] = "2"
    problems = platform_variable_problems(broken, {}, "", platform_environment_variables())
    assert any("NEURACRM_SERVING_WORKER," in problem for problem in problems), problems


def test_a_setting_missing_from_the_constant_is_reported() -> None:
    original = CONFIG_PY.read_text()
    source = original.replace('os.environ.get("NEURACRM_BIAS_ATTRIBUTE")', 'os.environ.get("NEURACRM_BIAS")')
    assert source != original
    problems = settings_list_problems(source)
    assert "config.py reads NEURACRM_BIAS but ENVIRONMENT_VARIABLES does not list it" in problems
    assert "ENVIRONMENT_VARIABLES lists NEURACRM_BIAS_ATTRIBUTE but config.py never reads it" in problems


def test_a_dags_folder_elsewhere_than_the_copied_dags_is_reported(resolved: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/neuracrm/dags" in text
    broken = text.replace(
        "AIRFLOW__CORE__DAGS_FOLDER=/opt/neuracrm/dags", "AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags"
    )
    problems = dockerfile_problems(broken, DOCKERIGNORE.read_text(), resolved)
    assert any(problem.startswith("docker/Dockerfile: AIRFLOW__CORE__DAGS_FOLDER") for problem in problems), (
        problems
    )
