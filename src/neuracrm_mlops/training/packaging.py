"""What a logged MLflow model ships so that it loads and serves outside this checkout.

- **Code**: the pyfuncs import ``neuracrm_mlops``; each lead scoring and sentiment version ships the
  project's wheel (``artifacts/neuracrm_mlops-<version>-py3-none-any.whl``, listed in its
  ``requirements.txt`` relative to the model directory, where ``mlflow models serve --env-manager
  virtualenv`` resolves it). Forecasts are one model per organization: the wheel is logged once per
  chunk run (``environment/``) and each version names it in its ``code_wheel`` tag instead of carrying
  a copy (see ``forecast_training``).
- **Signatures** with the params schema and **input examples** (see the ``*_signature`` functions).
- **Training data** recorded with ``mlflow.log_input`` (``log_training_data``).

The wheel is built here, from the package's importable files (whether installed editable from the
checkout or as a wheel), with no build tool or network; it is cached per content hash, so a
training process builds it once.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

DISTRIBUTION = "neuracrm-mlops"
PACKAGE = "neuracrm_mlops"
# subpackages that live outside src/ in the checkout (pyproject's package-dir)
MAPPED_SUBPACKAGES = ("models", "serving")
WHEEL_ARTIFACT = "code_wheel"  # the pyfunc artifact key (and the forecast versions' tag)
SHIPPED_SUFFIXES = (".py", ".mako", ".j2")  # the package's files: sources and its declared package data

# ---------------------------------------------------------------------------------------------
# The project's wheel


def package_files() -> list[tuple[str, Path]]:
    """(path inside the wheel, file) for every file of the ``neuracrm_mlops`` package as it is
    importable now: ``src/neuracrm_mlops`` plus the mapped ``models/`` and ``serving/`` in a checkout,
    or the installed package directory."""
    roots: list[tuple[str, Path]] = []
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{PACKAGE} is not importable")
    roots += [(PACKAGE, Path(location)) for location in spec.submodule_search_locations]
    for name in MAPPED_SUBPACKAGES:
        sub = find_spec(f"{PACKAGE}.{name}")
        if sub is not None and sub.submodule_search_locations:
            roots += [(f"{PACKAGE}/{name}", Path(loc)) for loc in sub.submodule_search_locations]
    files: dict[str, Path] = {}
    for prefix, root in roots:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if (
                path.is_file()
                and path.suffix in SHIPPED_SUFFIXES
                and "__pycache__" not in relative.parts
                and not any(part.startswith(".") for part in relative.parts)
            ):
                files.setdefault(f"{prefix}/{relative.as_posix()}", path)
    return sorted(files.items())


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _metadata_text(version: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DISTRIBUTION}", f"Version: {version}"]
    try:
        dist = metadata.distribution(DISTRIBUTION)
        lines += [f"Summary: {dist.metadata['Summary'] or ''}", "Requires-Python: >=3.11,<3.12"]
        lines += [f"Requires-Dist: {requirement}" for requirement in dist.requires or []]
    except metadata.PackageNotFoundError:
        pass
    return "\n".join(lines) + "\n"


def _entry_points_text() -> str:
    try:
        return metadata.distribution(DISTRIBUTION).read_text("entry_points.txt") or ""
    except metadata.PackageNotFoundError:
        return ""


def package_version() -> str:
    from neuracrm_mlops import __version__

    return __version__


def content_hash(files: Sequence[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def write_wheel(directory: Path, files: Sequence[tuple[str, Path]], version: str) -> Path:
    """A pure-Python wheel of ``files`` (reproducible: fixed timestamps, sorted entries)."""
    dist_info = f"{PACKAGE}-{version}.dist-info"
    wheel = directory / f"{PACKAGE}-{version}-py3-none-any.whl"
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in files]
    entries.append((f"{dist_info}/METADATA", _metadata_text(version).encode()))
    entries.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: neuracrm_mlops.training.packaging\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    if entry_points := _entry_points_text():
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    entries.append((f"{dist_info}/top_level.txt", f"{PACKAGE}\n".encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in entries:
        writer.writerow([name, _record_hash(data), str(len(data))])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode()))
    partial = wheel.with_suffix(f".{os.getpid()}.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    partial.replace(wheel)  # atomic: concurrent builders of the same content write the same bytes
    return wheel


def _cache_root() -> Path:
    """Wheels are cached under NEURACRM_HOME/wheels (one directory per content hash)."""
    from neuracrm_mlops.config import get_settings

    return get_settings().home / "wheels"


def _cached_wheel(key: str, version: str) -> Path:
    directory = _cache_root() / key
    wheel = directory / f"{PACKAGE}-{version}-py3-none-any.whl"
    if wheel.is_file():
        return wheel
    directory.mkdir(parents=True, exist_ok=True)
    return write_wheel(directory, package_files(), version)


def project_wheel() -> Path:
    """The project's wheel for the code running now, built once per content (a few hundred KB, well
    under a second to build; hashing the sources to find it in the cache takes milliseconds).

    Its version is ``<package version>+<content hash>`` so that two different trees never share a
    wheel name."""
    files = package_files()
    key = content_hash(files)
    return _cached_wheel(key, f"{package_version()}+{key}")


def wheel_requirement(wheel: Path) -> str:
    """The requirement line for a wheel shipped as a pyfunc artifact (relative to the model
    directory, where MLflow's virtualenv env manager installs the requirements from)."""
    return f"artifacts/{wheel.name}"


def base_pip_requirements() -> list[str]:
    """The packages the pyfuncs import, pinned to this environment's versions."""
    return [
        f"{name}=={metadata.version(name)}"
        for name in ("mlflow", "scikit-learn", "pandas", "numpy", "joblib")
    ]


def shipped_pip_requirements(wheel: Path | None) -> list[str]:
    return [*base_pip_requirements(), *([wheel_requirement(wheel)] if wheel else [])]


# ---------------------------------------------------------------------------------------------
# Signatures and input examples

LEAD_EXAMPLE: dict[str, Any] = {
    "company_employees": 120.0,
    "company_revenue": 5_000_000.0,
    "email_opens": 4.0,
    "website_visits": 6.0,
    "pages_viewed": 14.0,
    "time_on_site_seconds": 420.0,
    "days_since_last_activity": 3.0,
    "industry": "software",
    "seniority": "director",
    "timeline": "this_quarter",
    "budget_signal": "approved",
    "source": "webinar",
    "region": "emea",
    "job_title": "Director of Sales Operations",
    "description": "Asked for pricing after the webinar; evaluating two vendors.",
    "attributes": {"plan_interest": "enterprise"},
}
SENTIMENT_EXAMPLE: dict[str, list[str]] = {"text": ["Thanks, the demo went well: please send the proposal."]}
FORECAST_EXAMPLE: dict[str, list[int]] = {"months": [1, 12]}


def params_schema(params: Mapping[str, Any] | None) -> Any:
    """MLflow's ParamSchema for the pyfunc's params (their values are the defaults)."""
    if not params:
        return None
    from mlflow.types.schema import ParamSchema, ParamSpec

    kinds = {bool: "boolean", int: "long", float: "double", str: "string"}
    return ParamSchema([ParamSpec(name, kinds[type(value)], value) for name, value in params.items()])


def lead_signature(params: Mapping[str, Any] | None = None) -> Any:
    """Every column a lead model reads, each optional and of any type: MLflow's schema enforcement
    then accepts what the model accepts (any subset of the columns, values the model coerces itself,
    an ``attributes`` dict of custom fields); columns no lead model reads are dropped."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec

    from neuracrm_mlops.models.lead_scoring_model import INPUT_COLUMNS

    any_type = AnyType()  # type: ignore[no-untyped-call]
    columns: list[ColSpec | TensorSpec] = [
        ColSpec(any_type, name, required=False) for name in (*INPUT_COLUMNS, "attributes")
    ]
    return ModelSignature(inputs=Schema(columns), params=params_schema(params))


def sentiment_signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "text")]))


def forecast_signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("long", "months")]))


def lead_input_example() -> pd.DataFrame:
    return pd.DataFrame([LEAD_EXAMPLE])


def sentiment_input_example() -> pd.DataFrame:
    return pd.DataFrame(SENTIMENT_EXAMPLE)


def forecast_input_example() -> pd.DataFrame:
    return pd.DataFrame(FORECAST_EXAMPLE)


# ---------------------------------------------------------------------------------------------
# Training data


def _plain_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns MLflow can describe in a dataset schema (dicts and lists become text)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, dict | list)).any():
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def training_dataset(
    frame: pd.DataFrame, name: str, snapshot_hash: str, *, targets: str | None = None
) -> Any:
    """A dataset entry for ``frame``: its name, the snapshot hash as digest (MLflow keeps 36
    characters) and in the source's tags: no row is uploaded, only the schema
    and the row count."""
    from mlflow.data.pandas_dataset import from_pandas

    return from_pandas(
        _plain_columns(frame),
        source=_source(name, snapshot_hash),
        name=name,
        digest=snapshot_hash[:36],
        targets=targets,
    )


def _source(name: str, snapshot_hash: str) -> Any:
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={"neuracrm_dataset": name, "data_snapshot_hash": snapshot_hash})


def log_training_data(
    frame: pd.DataFrame,
    name: str,
    snapshot_hash: str,
    *,
    targets: str | None = None,
    context: str = "training",
) -> bool:
    """``mlflow.log_input`` of the training data in the active run; a failure is logged, not raised
    (the data's hash is on the version's tags either way). Returns whether it was recorded."""
    import mlflow

    try:
        # MLflow hints that integer columns cannot hold missing values: this is a record, not a contract
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.log_input(
                training_dataset(frame, name, snapshot_hash, targets=targets),
                context=context,
                tags={"data_snapshot_hash": snapshot_hash},
            )
    except Exception as exc:
        log.warning("could not record the training data %s with mlflow.log_input: %s", name, exc)
        return False
    return True
