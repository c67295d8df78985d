"""Airflow plugin: NeuraCRM's model-health page for on-call, at ``/neuracrm/health`` on the api-server,
with a "Model health" entry in the Airflow navigation.

Wiring only: the page and the rollback are ``neuracrm_mlops.ops.health_page``. Airflow does not
authenticate plugin apps, so this one does: the Airflow user comes from the ``Authorization:
Bearer`` header or the ``_token`` cookie the UI sets (``get_user``; 401 without one); viewing needs
read access to a rollout DAG (``rollout_lead_scoring``, ``rollout_sentiment`` or
``rollout_sales_forecast``), rolling a model back needs edit access to its family's rollout DAG (the
auth manager decides; 403 otherwise; the button shows when the user may edit them all). A rollback
POST must also come from a page of this server (Origin, else Referer) and carry the page's token.
Library imports happen per request, so loading the plugin stays cheap in every Airflow process.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

URL_PREFIX = "/neuracrm"
_bearer = HTTPBearer(auto_error=False)

app = FastAPI(title="NeuraCRM model health", docs_url=None, redoc_url=None, openapi_url=None)


async def _current_user(
    request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, bearer)


AirflowUser = Annotated[Any, Depends(_current_user)]


def _allowed(
    user: Any, method: Literal["GET", "PUT"], dag_ids: tuple[str, ...] | None = None, *, every: bool = False
) -> bool:
    """Whether the auth manager lets ``user`` ``method`` one (``every``: each) of ``dag_ids`` (default:
    the rollout DAGs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    from neuracrm_mlops.ops.health_page import ROLLOUT_DAG_IDS

    manager = get_auth_manager()
    answers = (
        manager.is_authorized_dag(method=method, details=DagDetails(id=dag_id), user=user)
        for dag_id in (dag_ids or ROLLOUT_DAG_IDS)
    )
    return all(answers) if every else any(answers)


def _secret() -> str:
    from airflow.configuration import conf

    return conf.get("api_auth", "jwt_secret", fallback="")


def _html(text: str, status: int = 200) -> HTMLResponse:
    from neuracrm_mlops.ops.health_page import PAGE_HEADERS

    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


@app.exception_handler(HTTPException)
async def _refusal(request: Request, exc: HTTPException) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    from neuracrm_mlops.ops.health_page import render_message_page

    if exc.status_code == 401:
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        page = render_message_page(
            "Sign in to Airflow", f"{exc.detail}: the model health page needs an Airflow login.", link=login
        )
    elif exc.status_code == 403:
        page = render_message_page("Not allowed", str(exc.detail))
    else:
        return await http_exception_handler(request, exc)
    return _html(page, exc.status_code)


def _page(user: Any, **extra: Any) -> str:
    from airflow.configuration import conf

    from neuracrm_mlops.ops.health_page import csrf_token, health_page_html
    from neuracrm_mlops.store.db.engine import get_engine

    name = user.get_name()
    return health_page_html(
        get_engine(),
        username=name,
        can_rollback=_allowed(user, "PUT", every=True),
        csrf=csrf_token(_secret(), name),
        airflow_url=conf.get("api", "base_url", fallback="") or "/",
        **extra,
    )


@app.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    return RedirectResponse("health", status_code=307)


@app.get("/health", response_class=HTMLResponse)
def health(user: AirflowUser, rolled_back: str | None = None) -> Response:
    if not _allowed(user, "GET"):
        raise HTTPException(403, f"{user.get_name()} may not read the rollout DAGs")
    return _html(_page(user, rolled_back=rolled_back))


@app.post("/rollback", response_class=HTMLResponse)
async def rollback(request: Request, user: AirflowUser) -> Response:
    from airflow.configuration import conf
    from starlette.concurrency import run_in_threadpool

    from neuracrm_mlops.ops.health_page import (
        csrf_token_matches,
        rollout_dag_id,
        same_origin,
        submit_rollback,
    )
    from neuracrm_mlops.store.db.engine import get_engine

    name = user.get_name()
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    dag_id = rollout_dag_id(form.get("model") or "")
    if not _allowed(user, "PUT", (dag_id,)):
        raise HTTPException(403, f"{name} may not roll models back (needs edit access to {dag_id})")
    bases = [str(request.base_url), conf.get("api", "base_url", fallback="")]
    if not same_origin(request.headers.get("origin"), request.headers.get("referer"), bases):
        raise HTTPException(403, "a rollback must be posted from the model health page of this server")
    if not csrf_token_matches(_secret(), name, form.get("csrf_token")):
        raise HTTPException(403, "the form's token is missing or stale: reload the page and try again")
    outcome = await run_in_threadpool(submit_rollback, get_engine(), form, username=name)
    if outcome.done:
        return RedirectResponse(outcome.redirect_to(), status_code=303)
    page = await run_in_threadpool(_page, user, notice=outcome.notice)
    return _html(page, outcome.status)


class NeuraCRMHealthPlugin(AirflowPlugin):
    name = "neuracrm_health"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "NeuraCRM model health"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Model health",
            "href": f"{URL_PREFIX}/health",
            "destination": "nav",
            "url_route": "model-health",
        }
    ]
