"""Airflow failure callbacks that raise a persisted, delivered NeuraCRM alert.

Use either the notifier or the plain function as a task's or a DAG's ``on_failure_callback``::

    default_args = {..., "on_failure_callback": NeuraCRMAlertNotifier()}
    DAG(..., on_failure_callback=dag_failure_callback)

Each failure raises a critical ``dag_failed`` alert (the DAG, task and run, the exception, the log
URL and a runbook line), deduplicated per DAG and task: the same task failing again counts up the
open alert instead of paging again. A callback never raises: a problem while alerting is logged.

Only the Airflow notifier base is imported here (DAG files load it anyway); the database and the
webhook client are imported when a callback runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context

log = logging.getLogger(__name__)

ALERT_KIND = "dag_failed"
_SEVERITIES = ("info", "warning", "critical")  # neuracrm_mlops.store.alerts.SEVERITIES, without importing it
_EXCEPTION_MAX = 2_000


def _dag_id(context: Mapping[str, Any]) -> str:
    for key in ("dag", "dag_run", "ti", "task_instance"):
        dag_id = getattr(context.get(key), "dag_id", None)
        if dag_id:
            return str(dag_id)
    return "unknown_dag"


def _task_id(context: Mapping[str, Any]) -> str | None:
    for key in ("ti", "task_instance", "task"):
        task_id = getattr(context.get(key), "task_id", None)
        if task_id:
            return str(task_id)
    return None


def _run_id(context: Mapping[str, Any]) -> str | None:
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    return str(run_id) if run_id else None


def _log_url(context: Mapping[str, Any]) -> str | None:
    for key in ("ti", "task_instance"):
        ti = context.get(key)
        if ti is None:
            continue
        try:
            url = getattr(ti, "log_url", None)  # a property that reads Airflow's config
        except Exception:  # a missing URL must not stop the alert
            url = None
        if url:
            return str(url)
    return None


def _exception_text(context: Mapping[str, Any]) -> str:
    exception = context.get("exception")
    if exception is None:
        reason = context.get("reason")  # DAG-level callbacks carry a reason instead
        return str(reason) if reason else "no exception in the Airflow context"
    if isinstance(exception, BaseException):
        text = f"{type(exception).__name__}: {exception}"
    else:
        text = str(exception)
    return text if len(text) <= _EXCEPTION_MAX else text[: _EXCEPTION_MAX - 1] + "…"


def _try_number(context: Mapping[str, Any]) -> int | None:
    for key in ("ti", "task_instance"):
        try_number = getattr(context.get(key), "try_number", None)
        if isinstance(try_number, int):
            return try_number
    return None


def failure_alert_fields(context: Mapping[str, Any], *, severity: str = "critical") -> dict[str, Any]:
    """The ``raise_alert`` keyword arguments for a failure described by an Airflow ``context``."""
    dag_id = _dag_id(context)
    task_id = _task_id(context)
    run_id = _run_id(context)
    exception = _exception_text(context)
    log_url = _log_url(context)
    where = f"{dag_id}.{task_id}" if task_id else dag_id
    links: dict[str, Any] = {}
    if log_url:
        links["task_log"] = log_url
    command = (
        f"airflow tasks test {dag_id} {task_id} <logical date>" if task_id else f"airflow dags test {dag_id}"
    )
    message_lines = [
        f"{'Task' if task_id else 'DAG'} {where} failed in run {run_id or 'unknown'}.",
        f"Exception: {exception}",
    ]
    if log_url:
        message_lines.append(f"Log: {log_url}")
    return {
        "kind": ALERT_KIND,
        "severity": severity,
        "title": f"{where} failed",
        "message": "\n".join(message_lines),
        "dedup_key": f"{ALERT_KIND}:{dag_id}:{task_id or '-'}",
        "metrics": {
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": run_id,
            "try_number": _try_number(context),
            "exception": exception,
        },
        "action_taken": "none: Airflow retries per the task's retries, then the run stops at this task",
        "runbook": (
            f"Open the task log, fix the cause, then clear the failed task in the Airflow UI "
            f"(or reproduce with `{command}`); the champion is untouched by a failed run."
        ),
        "links": links,
    }


def _already_alerted(exception: object) -> bool:
    """Whether the exception (or what caused it) already raised its own alert."""
    seen = 0
    while isinstance(exception, BaseException) and seen < 10:
        if getattr(exception, "already_alerted", False):
            return True
        exception = exception.__cause__ or exception.__context__
        seen += 1
    return False


def raise_failure_alert(context: Mapping[str, Any], *, severity: str = "critical") -> int | None:
    """Raise (or count again) the failure alert for ``context``; the alert id, or None when
    alerting itself failed (logged, never raised)."""
    try:
        from neuracrm_mlops.store.alerts import raise_alert
        from neuracrm_mlops.store.db.engine import get_engine

        if _already_alerted(context.get("exception")):
            log.info("the failure already raised its own alert; not paging again")
            return None
        fields = failure_alert_fields(context, severity=severity)
        ref = raise_alert(get_engine(), **fields)
        return ref.id
    except Exception:
        log.exception("could not raise the NeuraCRM alert for a failed Airflow run")
        return None


class NeuraCRMAlertNotifier(BaseNotifier):
    """An Airflow notifier: a failed task or DAG raises a persisted, delivered NeuraCRM alert."""

    def __init__(self, severity: str = "critical") -> None:
        if severity not in _SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(_SEVERITIES)}, got {severity!r}")
        super().__init__()
        self.severity = severity

    def notify(self, context: Context) -> None:
        raise_failure_alert(context, severity=self.severity)

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        # nothing is templated here; skipping it keeps a failure alert from depending on Jinja or the DAG
        if self.template_fields:
            super().render_template_fields(context, jinja_env)

    def __call__(self, *args: Any) -> None:
        # BaseNotifier renders templates and re-raises notify's errors: a failure callback must not
        try:
            super().__call__(*args)
        except Exception:
            log.exception("the NeuraCRM alert notifier failed")


def dag_failure_callback(context: Mapping[str, Any]) -> None:
    """A plain ``on_failure_callback`` (task or DAG level) that raises the critical failure alert."""
    raise_failure_alert(context)
