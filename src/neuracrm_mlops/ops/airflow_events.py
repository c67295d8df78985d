"""Announce new CRM data to Airflow as an asset event, over Airflow's REST API (v2).

``neuracrm-mlops import`` calls :func:`announce_import` after the rows were committed: the asset
``neuracrm://crm/<dataset>`` gets an event (``POST /api/v2/assets/events``), and the training DAG
scheduled on it starts. Configuration (``NEURACRM_AIRFLOW_API_URL``, e.g. ``http://airflow:8080``, and
either ``NEURACRM_AIRFLOW_API_TOKEN`` or ``NEURACRM_AIRFLOW_API_USERNAME`` + ``_PASSWORD``, exchanged for
a JWT at ``POST {url}/auth/token`` as Airflow's SimpleAuthManager and FAB auth manager do). The user
needs the right to create asset events (Airflow's Op or Admin role).

Every failure is an :class:`AirflowEventError` whose message says what to check; the import itself is
never undone by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from neuracrm_mlops.errors import NeuraCRMError

if TYPE_CHECKING:
    from neuracrm_mlops.config import Settings
    from neuracrm_mlops.store.ingest import ImportSummary

# the asset each import dataset announces (dags: neuracrm_mlops.ops.dag_support.CRM_ASSETS, same URIs)
DATASET_ASSET_URIS = {
    "leads": "neuracrm://crm/leads",
    "sales": "neuracrm://crm/monthly_sales",
    "interactions": "neuracrm://crm/interactions",
}
TIMEOUT_SECONDS = 10.0
CONFIGURE_HINT = (
    "set NEURACRM_AIRFLOW_API_URL (the Airflow api-server, e.g. http://airflow:8080) and "
    "NEURACRM_AIRFLOW_API_TOKEN, or NEURACRM_AIRFLOW_API_USERNAME and NEURACRM_AIRFLOW_API_PASSWORD"
)


class AirflowEventError(NeuraCRMError):
    """The asset event could not be sent (Airflow unreachable, credentials refused, asset unknown)."""


@dataclass(frozen=True)
class EmittedEvent:
    """An asset event Airflow accepted."""

    event_id: int
    asset_id: int
    uri: str
    timestamp: str
    extra: dict[str, Any]


class AirflowApi:
    """The few calls of Airflow's REST API v2 the platform makes (a bearer JWT on each)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token and not (username and password):
            raise AirflowEventError(
                f"Airflow at {url} is configured without credentials: set NEURACRM_AIRFLOW_API_TOKEN, "
                "or NEURACRM_AIRFLOW_API_USERNAME and NEURACRM_AIRFLOW_API_PASSWORD"
            )
        self.url = url.rstrip("/")
        self._token = token
        self._username = username
        self._password = password
        self._client = httpx.Client(timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowApi | None:
        """The configured Airflow, or None when ``NEURACRM_AIRFLOW_API_URL`` is not set."""
        if not settings.airflow_api_url:
            return None
        return cls(
            settings.airflow_api_url,
            token=settings.airflow_api_token,
            username=settings.airflow_api_username,
            password=settings.airflow_api_password,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, f"{self.url}{path}", **kwargs)
        except httpx.TimeoutException as exc:
            raise AirflowEventError(
                f"Airflow at {self.url} did not answer {method} {path} in time "
                f"({type(exc).__name__}): is the api-server up?"
            ) from exc
        except httpx.HTTPError as exc:
            raise AirflowEventError(
                f"cannot reach Airflow at {self.url} ({type(exc).__name__}: {exc}): check "
                "NEURACRM_AIRFLOW_API_URL and that the api-server is running"
            ) from exc

    def token(self) -> str:
        """The configured token, or a JWT for the configured user (``POST /auth/token``)."""
        if self._token:
            return self._token
        response = self._send(
            "POST", "/auth/token", json={"username": self._username, "password": self._password}
        )
        if response.status_code in (401, 403):
            raise AirflowEventError(
                f"Airflow at {self.url} refused the user {self._username!r} ({response.status_code} on "
                "POST /auth/token): check NEURACRM_AIRFLOW_API_USERNAME and NEURACRM_AIRFLOW_API_PASSWORD"
            )
        if response.status_code == 404:
            raise AirflowEventError(
                f"{self.url} has no POST /auth/token (404): is NEURACRM_AIRFLOW_API_URL the Airflow 3 "
                "api-server's base URL (no /api/v2 suffix)? Or set NEURACRM_AIRFLOW_API_TOKEN instead"
            )
        if response.status_code not in (200, 201):
            raise AirflowEventError(
                f"Airflow at {self.url} answered {response.status_code} on POST /auth/token: "
                f"{_short(response.text)}"
            )
        try:
            token = str(response.json()["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AirflowEventError(
                f"Airflow at {self.url} answered POST /auth/token without an access_token: "
                f"{_short(response.text)}"
            ) from exc
        self._token = token
        return token

    def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        response = self._send(method, path, headers=headers, **kwargs)
        if response.status_code == 401:
            who = f"the user {self._username!r}" if self._username else "NEURACRM_AIRFLOW_API_TOKEN"
            raise AirflowEventError(
                f"Airflow at {self.url} refused {who} (401 on {method} {path}): the token is invalid or "
                "expired; check the credentials"
            )
        if response.status_code == 403:
            raise AirflowEventError(
                f"Airflow at {self.url} does not let this user {method} {path} (403): asset events need "
                "an Airflow role that may create them (Op or Admin)"
            )
        return response

    # -- assets ------------------------------------------------------------------------------------

    def asset_id(self, uri: str) -> int:
        """The id of the active asset with exactly this URI (``GET /api/v2/assets?uri_pattern=``)."""
        response = self._api("GET", "/api/v2/assets", params={"uri_pattern": uri, "limit": 100})
        if response.status_code == 404:
            raise AirflowEventError(
                f"{self.url} has no /api/v2/assets (404): is NEURACRM_AIRFLOW_API_URL the Airflow 3 "
                "api-server's base URL (no /api/v2 suffix)?"
            )
        if response.status_code != 200:
            raise AirflowEventError(
                f"Airflow at {self.url} answered {response.status_code} on GET /api/v2/assets: "
                f"{_short(response.text)}"
            )
        for asset in response.json().get("assets", []):
            if asset.get("uri") == uri:
                return int(asset["id"])
        raise AirflowEventError(
            f"Airflow at {self.url} has no asset {uri} (404): it exists once a DAG that uses it is "
            "parsed; are this repository's dags/ deployed, and their DAG processor running?"
        )

    def emit(self, uri: str, extra: Mapping[str, Any]) -> EmittedEvent:
        """Create an event of the asset ``uri`` (``POST /api/v2/assets/events``); DAGs scheduled on it run."""
        asset_id = self.asset_id(uri)
        response = self._api(
            "POST", "/api/v2/assets/events", json={"asset_id": asset_id, "extra": dict(extra)}
        )
        if response.status_code == 404:
            raise AirflowEventError(
                f"Airflow at {self.url} no longer has the asset {uri} (id {asset_id}, 404 on "
                "POST /api/v2/assets/events)"
            )
        if response.status_code not in (200, 201):
            raise AirflowEventError(
                f"Airflow at {self.url} answered {response.status_code} on POST /api/v2/assets/events: "
                f"{_short(response.text)}"
            )
        body = response.json()
        return EmittedEvent(
            event_id=int(body["id"]),
            asset_id=asset_id,
            uri=uri,
            timestamp=str(body.get("timestamp", "")),
            extra=dict(body.get("extra") or {}),
        )


def import_event_extra(summary: ImportSummary) -> dict[str, Any]:
    """What an import's asset event carries: the file, organization, rows and the import's id and hash."""
    return {
        "source": "neuracrm-mlops import",
        "dataset": summary.dataset,
        "file": summary.file,
        "file_sha256": summary.file_sha256,
        "organization_id": summary.organization_id,
        "organization": summary.organization_name,
        "rows_imported": summary.imported,
        "rows_updated": summary.updated,
        "rows_unchanged": summary.unchanged,
        "rows_quarantined": summary.quarantined,
        "import_batch_id": summary.batch_id,
    }


def announce_import(summary: ImportSummary, api: AirflowApi) -> EmittedEvent:
    """Emit the import's asset event (``neuracrm://crm/<dataset>``) to ``api``."""
    return api.emit(DATASET_ASSET_URIS[summary.dataset], import_event_extra(summary))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


TRAINING_DAGS = {
    "leads": "train_lead_scoring",
    "interactions": "train_sentiment",
    "sales": "train_sales_forecast",
}


@dataclass(frozen=True)
class Announcement:
    """What became of an import's asset event; ``message`` is the one line to show."""

    status: str  # emitted | no_change | not_configured | failed
    message: str
    event: EmittedEvent | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def announce_after_import(
    summary: ImportSummary, settings: Settings, *, retry_command: str, force: bool = False
) -> Announcement:
    """Announce a committed import unless nothing changed (``force``: even then); never raises.

    ``retry_command`` is the exact command that sends the event again (the import is idempotent, so
    re-running it with ``--announce`` changes no row and only announces)."""
    uri = DATASET_ASSET_URIS[summary.dataset]
    changed = summary.imported + summary.updated
    if not changed and not force:
        return Announcement(
            "no_change",
            f"no asset event sent to Airflow: 0 rows imported or updated ({summary.unchanged:,} unchanged), "
            f"nothing new for {TRAINING_DAGS[summary.dataset]} (add --announce to send {uri} anyway)",
        )
    try:
        api = AirflowApi.from_settings(settings)
    except AirflowEventError as exc:
        return _failed(summary, uri, exc, retry_command)
    if api is None:
        return Announcement(
            "not_configured",
            f"note: no Airflow configured, so the asset event {uri} was skipped "
            f"({TRAINING_DAGS[summary.dataset]} picks the rows up at its scheduled run); to start it on "
            f"import, {CONFIGURE_HINT}",
        )
    try:
        with api:
            event = announce_import(summary, api)
    except AirflowEventError as exc:
        return _failed(summary, uri, exc, retry_command)
    return Announcement(
        "emitted",
        f"asset event {uri} #{event.event_id} sent to Airflow at {api.url}: "
        f"{TRAINING_DAGS[summary.dataset]} starts from it",
        event,
    )


def _failed(summary: ImportSummary, uri: str, exc: Exception, retry_command: str) -> Announcement:
    return Announcement(
        "failed",
        f"the rows are imported (batch {summary.batch_id}) but the asset event {uri} was NOT sent: {exc}. "
        f"To send it again (changes no row): {retry_command}",
    )
