"""The model-health page for on-call: one row per served model, rollback one click away.

Served by the Airflow plugin ``plugins/neuracrm_health.py`` (wiring only: authentication,
authorization and HTTP); everything the page knows and does is here, testable without Airflow.

- ``model_health``: one ``HealthRow`` per served model (``lead_scoring``, ``sentiment``) and one per
  organization's forecast (``sales_forecast_org_<id>``): champion, challenger and canary weight
  (read as ``rollout.model_state`` reads them, as ``status`` shows them), live accuracy of both over
  ``NEURACRM_MONITOR_WINDOW_HOURS`` against ``NEURACRM_ACCURACY_FLOOR`` (the numbers of
  ``live_stats.version_stats``, which the monitor and the canary judge use), drift and bias flags
  (open alerts of those kinds), the open alerts, the latest promotion-ledger entries of the model and
  what a rollback would restore (``ledger.previous_champion``, as ``rollout.rollback`` finds it).
- Scale: the reads of a page load do not grow with the number of organizations (but for paging):
  one registry search for the forecasts (a call per 1,000 models; the results carry the aliases and
  tags, so no request per model) plus one request per shared model; the open alerts once; the ledger
  once (the latest entries per model by a window function, with every model's champion moves); per
  shared model its predictions over the window and its outcomes (``version_stats``), and for all the
  forecasts together one read of the predictions and one of the outcomes, scored in one pandas pass
  (``_forecast_accuracy``). Reads that name models send at most ``IN_LIST_MAX`` names at a time. At
  1,000 organizations on SQLite a page is built in about 1.2 s (``benchmarks/health_page_scale.py``);
  it took 30 s when every row made its own reads.
- Order and length: rows that need attention come first (``attention``: below the floor, then open
  alerts, then a canary running), then the shared models, then the forecasts by organization id. The
  table lists every row that needs attention, the shared models, and quiet forecasts until
  ``FORECAST_ROWS_SHOWN`` (200) forecast rows are listed; a line says how many more organizations
  there are, all healthy (not below the floor, no open alert, no canary running). The row of a model
  just rolled back from the page is always listed. The summary line counts every row.
- ``scenario_health``: the voice scenarios (prompts in MLflow's prompt registry, ``status.voice_scenarios``):
  per scenario champion, challenger and canary weight, previous, the champion's call success over
  the window, its open alerts (from the alerts the page already read) and its latest ledger entries
  (one ledger read for every scenario). Reads: one prompt search plus, per scenario, its aliases and
  one call-success query (scenarios are a handful, not one per organization). MLflow unreadable: the
  section says so and the rest of the page shows.
- ``render_health_page``: a self-contained HTML page (inline CSS, no script, no external asset): a
  table, accuracy in red below the floor, and per row a rollback form. ``page_view`` turns the rows into
  plain views (numbers and times formatted, every choice made); the Jinja2 templates in
  ``templates/health/`` (``page.html.j2``, its partials, ``base.html.j2``) only lay them out, with every
  value escaped by autoescape and a missing one an error (StrictUndefined). ``render_message_page``
  (``message.html.j2``) is the page of a refusal.
- ``rollback_from_page``: the form's action. It calls ``rollout.rollback``, the function behind
  ``neuracrm-mlops rollback``, with the actor ``airflow-ui:<Airflow user>`` and the reason typed in
  the form, and only if the champion is still the version the page showed (a stale page never
  rolls back a version nobody looked at).
- ``csrf_token`` / ``csrf_token_matches`` / ``same_origin``: the checks the plugin makes on the POST.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
import pandas as pd
import sqlalchemy as sa

from neuracrm_mlops.config import get_settings
from neuracrm_mlops.errors import NeuraCRMError
from neuracrm_mlops.families import FAMILIES, find_family
from neuracrm_mlops.monitoring.monitor import MONITORED_MODELS
from neuracrm_mlops.ops import status
from neuracrm_mlops.release import rollout
from neuracrm_mlops.release.live_stats import SERVED_ROUTES, family_of, forecast_actuals, version_stats
from neuracrm_mlops.store import ledger, registry
from neuracrm_mlops.store.alerts import AlertRow, list_alerts
from neuracrm_mlops.store.db.schema import Outcome, Prediction, PromotionLedgerEntry, utcnow
from neuracrm_mlops.store.ledger import LedgerEntry
from neuracrm_mlops.training.evaluation import forecast_accuracy

SERVED_MODELS = MONITORED_MODELS  # lead_scoring, sentiment: one model for every organization
ACTOR_PREFIX = "airflow-ui"
# the rollout DAG of each family: viewing the page needs read access to one of them, rolling a model
# back needs edit access to its family's (the plugin asks Airflow's auth manager)
ROLLOUT_DAG_IDS = tuple(f"rollout_{family}" for family in FAMILIES)


def rollout_dag_id(model_name: str) -> str:
    """The rollout DAG of ``model_name``'s family (``sales_forecast_org_7`` -> ``rollout_sales_forecast``)."""
    return f"rollout_{family_of(model_name)}"


DRIFT_KINDS = frozenset({"data_drift"})  # the kinds ``monitoring`` raises
BIAS_KINDS = frozenset({"bias"})
LEDGER_LINES_PER_ROW = 3
OPEN_ALERTS_READ = 1_000
FORECAST_ROWS_SHOWN = 200  # forecast rows listed at most, besides those that need attention
QUIET = 3  # ``attention`` of a row with nothing to look at
IN_LIST_MAX = 5_000  # models per ``IN (...)``: far below SQLite's 32,766 and PostgreSQL's 65,535 parameters
REASON_MAX = 500
# what the page's responses carry: nothing is loaded from anywhere, forms only post back here
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class HealthPageError(NeuraCRMError):
    """A rollback request the page cannot carry out as sent (unknown model, missing reason...)."""


@dataclass(frozen=True)
class HealthRow:
    """What on-call needs to know about one served model (a model not in MLflow keeps the defaults)."""

    model_name: str
    family: str
    organization_id: int | None
    accuracy_floor: float
    min_outcomes: int
    drift: bool = False  # an open data-drift alert
    bias: bool = False  # an open bias alert
    open_alerts: tuple[AlertRow, ...] = ()
    ledger: tuple[LedgerEntry, ...] = ()  # newest first
    registered: bool = False
    champion: str | None = None
    challenger: str | None = None
    previous: str | None = None
    canary_weight: float = 0.0
    canary_started_at: str | None = None
    rollback_target: str | None = None  # what a rollback restores (the ledger's previous champion)
    accuracy: float | None = None  # the champion's live accuracy over the window
    outcomes: int = 0
    challenger_accuracy: float | None = None
    challenger_outcomes: int = 0
    # who answers users: "model" or "fallback", and why (status.served_answers)
    answered_by: str = ""
    answered_why: str = ""

    @property
    def below_floor(self) -> bool:
        return self.accuracy is not None and self.accuracy < self.accuracy_floor

    @property
    def canary_running(self) -> bool:
        return bool(self.challenger) and self.canary_weight > 0

    @property
    def row_id(self) -> str:
        return f"row-{self.model_name}"


@dataclass(frozen=True)
class Notice:
    """A line at the top of the page: what the last action did (``ok``) or why it did nothing."""

    kind: str  # ok | error
    text: str


def ui_actor(username: str) -> str:
    """The ledger actor for a change made on the page: ``airflow-ui:<Airflow user>``."""
    name = " ".join(username.split()) or "unknown"
    return f"{ACTOR_PREFIX}:{name}"[:200]


def attention(row: HealthRow) -> int:
    """How soon on-call should look at a row: 0 below the floor, 1 open alerts, 2 canary running,
    ``QUIET`` (3) nothing to look at. The page lists rows in this order."""
    if row.below_floor:
        return 0
    if row.open_alerts:
        return 1
    if row.canary_running:
        return 2
    return QUIET


def model_health(
    engine: sa.Engine,
    *,
    ledger_lines: int = LEDGER_LINES_PER_ROW,
    open_alerts: Sequence[AlertRow] | None = None,
) -> list[HealthRow]:
    """One row per served model, the rows that need attention first (``attention``), then the shared
    models, then each organization's forecast by organization id.

    ``open_alerts``: the open alerts when the caller already read them (``list_alerts``), else read here.
    A bounded number of reads whatever the number of organizations: see the module's docstring.
    """
    if ledger_lines < 1:
        raise ValueError(f"ledger_lines must be at least 1, got {ledger_lines}")
    settings = get_settings()
    since = utcnow() - dt.timedelta(hours=settings.monitor_window_hours)
    if open_alerts is None:
        open_alerts = list_alerts(engine, open_only=True, limit=OPEN_ALERTS_READ)
    alerts_by_model: dict[str, list[AlertRow]] = {}
    for alert in open_alerts:
        if alert.model_name:
            alerts_by_model.setdefault(alert.model_name, []).append(alert)

    client = registry.configure_mlflow()
    states: dict[str, rollout.RolloutState | None] = {
        name: _shared_state(client, name) for name in SERVED_MODELS
    }
    for model in _forecast_models(client):
        states[model.name] = rollout.state_of(model)
    names = list(states)
    entries, champion_moves = _ledger_of(engine, names, ledger_lines)
    stats = _live_accuracy(engine, states, since)
    champions = {name: state.champion for name, state in states.items() if state is not None}
    served = {
        (a.family, a.organization_id): a
        for a in status.served_answers(engine, client=client, champions=champions)
    }

    rows = []
    for name in names:
        state = states[name]
        alerts = alerts_by_model.get(name, [])
        row = HealthRow(
            model_name=name,
            family=family_of(name),
            organization_id=rollout.organization_of(name),
            accuracy_floor=rollout.floor_of(name),
            min_outcomes=rollout.min_outcomes_for(name),
            drift=any(a.kind in DRIFT_KINDS for a in alerts),
            bias=any(a.kind in BIAS_KINDS for a in alerts),
            open_alerts=tuple(alerts),
            ledger=tuple(entries.get(name, ())),
        )
        if state is not None:
            row = _with_state(row, state, champion_moves.get(name, []), stats.get(name, {}))
        answer = served.get((row.family, row.organization_id))
        if answer is not None:
            row = dataclasses.replace(row, answered_by=answer.answered_by, answered_why=answer.why)
        rows.append(row)
    return sorted(rows, key=attention)  # stable: shared models, then forecasts by organization


def _with_state(
    row: HealthRow,
    state: rollout.RolloutState,
    champion_moves: list[tuple[str, str | None, str]],
    stats: Mapping[str, tuple[float | None, int]],
) -> HealthRow:
    champion, challenger = state.champion, state.challenger
    target = None
    if champion:  # what rollout.rollback restores when no version is named
        history = ledger.champion_history_of(champion_moves, champion)
        target = history.previous if history.known else state.previous
    accuracy, outcomes = stats.get(champion, (None, 0)) if champion else (None, 0)
    challenger_accuracy, challenger_outcomes = stats.get(challenger, (None, 0)) if challenger else (None, 0)
    return dataclasses.replace(
        row,
        registered=True,
        champion=champion,
        challenger=challenger,
        previous=state.previous,
        canary_weight=float(state.weight),
        canary_started_at=state.started_at.isoformat() if state.started_at else None,
        rollback_target=target,
        accuracy=accuracy,
        outcomes=outcomes,
        challenger_accuracy=challenger_accuracy,
        challenger_outcomes=challenger_outcomes,
    )


# --- the reads behind model_health: a bounded number, whatever the number of organizations ----------


def _shared_state(client: Any, name: str) -> rollout.RolloutState | None:
    """A shared model's state (one registry request), None when it is not registered (yet)."""
    try:
        return rollout.registered_state(client, name)
    except rollout.RolloutError:
        return None


def _forecast_models(client: Any) -> list[Any]:
    """Every ``sales_forecast_org_<id>`` by organization id: one paged registry search, whose results
    carry each model's aliases and tags."""
    prefix = registry.FORECAST_MODEL_PREFIX
    models = [m for m in registry.models_with_prefix(client) if m.name[len(prefix) :].isdigit()]
    return sorted(models, key=lambda m: int(m.name[len(prefix) :]))


def _chunks(names: Sequence[str]) -> Iterator[Sequence[str]]:
    """``names`` in slices small enough for one ``IN (...)`` on SQLite and PostgreSQL alike."""
    for start in range(0, len(names), IN_LIST_MAX):
        yield names[start : start + IN_LIST_MAX]


def _ledger_of(
    engine: sa.Engine, names: Sequence[str], lines: int
) -> tuple[dict[str, list[LedgerEntry]], dict[str, list[tuple[str, str | None, str]]]]:
    """In one query per ``IN_LIST_MAX`` models: each model's latest ``lines`` ledger entries (newest
    first), and its champion moves (oldest first, what ``ledger.previous_champion`` replays)."""
    table = PromotionLedgerEntry.__table__
    newest = (
        sa.func.row_number()
        .over(partition_by=table.c.model_name, order_by=table.c.id.desc())
        .label("newest_rank")
    )
    champion_move = sa.case(  # the rows ledger.previous_champion reads
        (
            sa.and_(
                table.c.alias == ledger.CHAMPION_ALIAS,
                table.c.action.in_(ledger.CHAMPION_ACTIONS),
                table.c.to_version.is_not(None),
                table.c.state == ledger.DONE,  # a pending or reverted move is not alias history
            ),
            1,
        ),
        else_=0,
    ).label("champion_move")
    latest: dict[str, list[LedgerEntry]] = {}
    moves: dict[str, list[tuple[str, str | None, str]]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(names):
            ranked = sa.select(table, newest, champion_move).where(table.c.model_name.in_(chunk)).subquery()
            query = (
                sa.select(ranked)
                .where(sa.or_(ranked.c.newest_rank <= lines, ranked.c.champion_move == 1))
                .order_by(ranked.c.id)
            )
            for row in conn.execute(query):
                if row.newest_rank <= lines:
                    latest.setdefault(row.model_name, []).insert(0, ledger.entry_from_row(row))
                if row.champion_move:
                    moves.setdefault(row.model_name, []).append(
                        (row.action, row.from_version, row.to_version)
                    )
    return latest, moves


def _live_accuracy(
    engine: sa.Engine, states: Mapping[str, rollout.RolloutState | None], since: dt.datetime
) -> dict[str, dict[str, tuple[float | None, int]]]:
    """``model -> version -> (live accuracy, outcomes)`` of every champion and challenger over the
    window: ``live_stats.version_stats`` for each shared model (two reads each), and one read of the
    predictions and one of the outcomes for all the forecasts (``_forecast_accuracy``)."""
    result: dict[str, dict[str, tuple[float | None, int]]] = {}
    forecasts: list[str] = []
    for name, state in states.items():
        versions = [v for v in (state.champion, state.challenger) if v] if state else []
        if not versions:
            continue
        family = find_family(name)
        if family is not None and family.naming == "per_organization":  # read together, in chunks
            forecasts.append(name)
            continue
        live = version_stats(engine, name, versions, since=since)
        result[name] = {v: (s.accuracy, s.outcomes) for v, s in live.items()}
    for chunk in _chunks(forecasts):
        predictions, outcomes = _load_forecast_family(engine, chunk, since)
        for (name, version), numbers in _forecast_accuracy(predictions, outcomes).items():
            result.setdefault(name, {})[version] = numbers
    return result


def _load_forecast_family(
    engine: sa.Engine, names: Sequence[str], since: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The served forecasts of ``names`` since ``since`` and their actuals, in one read each (the
    columns ``live_stats.load_predictions`` and ``load_outcomes`` give, plus the model's name)."""
    with engine.connect() as conn:
        predictions = conn.execute(
            sa.select(
                Prediction.model_name,
                Prediction.id,
                Prediction.model_version,
                Prediction.route,
                Prediction.output,
                Prediction.fallback,
            )
            .where(
                Prediction.model_name.in_(names),
                Prediction.created_at >= since,
                Prediction.route.in_(SERVED_ROUTES),
            )
            .order_by(Prediction.id)
        ).all()
        outcomes = conn.execute(
            sa.select(Outcome.model_name, Outcome.entity_id, Outcome.value).where(
                Outcome.model_name.in_(names), Outcome.value.is_not(None)
            )
        ).all()
    prediction_columns = ["model_name", "id", "model_version", "route", "output", "fallback"]
    return (
        pd.DataFrame([tuple(row) for row in predictions], columns=prediction_columns),
        pd.DataFrame([tuple(row) for row in outcomes], columns=["model_name", "entity_id", "value"]),
    )


def _forecast_accuracy(
    predictions: pd.DataFrame, outcomes: pd.DataFrame
) -> dict[tuple[str, str], tuple[float | None, int]]:
    """``(model, version) -> (accuracy, months)`` for many forecast models at once: what
    ``live_stats.stats_from`` gives each of them (``forecast_actuals`` over the whole family, accuracy
    ``evaluation.forecast_accuracy``), in one pass instead of ~9 ms of pandas per model. A version
    without a month with an actual is absent (no accuracy, 0 outcomes)."""
    joined = forecast_actuals(predictions, outcomes)
    joined = joined[joined["model_version"].notna()]
    actual, forecast = joined["actual"].to_numpy(float), joined["forecast"].to_numpy(float)
    groups: Mapping[Any, Any] = joined.groupby(["model_name", "model_version"], sort=False).indices
    return {
        (str(name), str(version)): (forecast_accuracy(actual[at], forecast[at]), len(at))
        for (name, version), at in groups.items()
    }


@dataclass(frozen=True)
class ScenarioHealth:
    """One voice scenario on the page: its status and its latest ledger entries (newest first)."""

    status: status.ScenarioStatus
    ledger: tuple[LedgerEntry, ...] = ()


@dataclass(frozen=True)
class ScenariosHealth:
    """The page's voice-scenario section (``readable`` False: MLflow could not be read, ``error`` why)."""

    readable: bool
    error: str | None
    window_hours: float
    scenarios: tuple[ScenarioHealth, ...]


def scenario_health(
    engine: sa.Engine,
    *,
    ledger_lines: int = LEDGER_LINES_PER_ROW,
    open_alerts: Sequence[AlertRow] | None = None,
) -> ScenariosHealth:
    """Every voice scenario with its latest ``ledger_lines`` ledger entries (one ledger read for all);
    ``open_alerts`` as in ``model_health``."""
    if open_alerts is None:
        open_alerts = list_alerts(engine, open_only=True, limit=OPEN_ALERTS_READ)
    block = status.voice_scenarios(engine, open_alerts=open_alerts)
    names = [s.prompt_name for s in block.scenarios]
    entries = _ledger_of(engine, names, ledger_lines)[0] if names else {}
    return ScenariosHealth(
        readable=block.readable,
        error=block.error,
        window_hours=block.window_hours,
        scenarios=tuple(ScenarioHealth(s, tuple(entries.get(s.prompt_name, ()))) for s in block.scenarios),
    )


def alerts_without_row(
    engine: sa.Engine, rows: Sequence[HealthRow], *, open_alerts: Sequence[AlertRow] | None = None
) -> list[AlertRow]:
    """Open alerts no row shows (validation failures, failed tasks, models no longer served);
    ``open_alerts`` as in ``model_health``."""
    if open_alerts is None:
        open_alerts = list_alerts(engine, open_only=True, limit=OPEN_ALERTS_READ)
    shown = {row.model_name for row in rows}
    return [a for a in open_alerts if a.model_name not in shown]


def rows_to_list(
    rows: Sequence[HealthRow], *, limit: int = FORECAST_ROWS_SHOWN, pinned: str | None = None
) -> tuple[list[HealthRow], int]:
    """The rows the page lists (in the order given) and how many it leaves out: every shared model,
    every row that needs attention (never left out, however many), the ``pinned`` model's row, and
    quiet forecasts until ``limit`` forecast rows are listed. Only quiet forecasts are left out."""
    listed: list[HealthRow] = []
    forecasts = left_out = 0
    for row in rows:
        forecast = row.organization_id is not None
        if not forecast or attention(row) < QUIET or row.model_name == pinned or forecasts < limit:
            listed.append(row)
            forecasts += forecast
        else:
            left_out += 1
    return listed, left_out


# --- the rollback action ---------------------------------------------------------------------------


def model_name_for(family: str, organization_id: str | int | None) -> str:
    """The registered model a form names: a served family, or a forecast with its organization."""
    org_text = str(organization_id).strip() if organization_id is not None else ""
    named = FAMILIES.get(family)
    if named is None:
        raise HealthPageError(f"unknown model {family!r}: one of {', '.join(FAMILIES)}")
    if named.naming == "shared":
        if org_text:
            raise HealthPageError(f"{family} is one model for every organization: no organization")
        return named.registered_name()
    if named.naming == "per_scenario":
        raise HealthPageError(
            f"{family}: scenarios are not rolled back from this page; a champion below the floor is rolled "
            "back by monitor_models (`neuracrm-mlops scenario monitor NAME`)"
        )
    if not org_text.isdigit():
        raise HealthPageError(f"{family} is one model per organization: give its organization id")
    return named.registered_name(int(org_text))


def rollback_from_page(
    engine: sa.Engine,
    *,
    family: str,
    organization_id: str | int | None,
    username: str,
    reason: str,
    expected_champion: str | None,
) -> rollout.RolloutResult:
    """Roll the model back as ``neuracrm-mlops rollback`` does, as ``airflow-ui:<username>``.

    ``expected_champion``: the champion the page showed; when it moved since, nothing happens
    (the result's action is ``noop`` and its reason says which version is champion now).
    Raises HealthPageError for a request that names no model or gives no reason, RolloutError
    when there is nothing to roll back to.
    """
    name = model_name_for(family, organization_id)
    why = " ".join(reason.split())
    if not why:
        raise HealthPageError("say why you roll back (the reason goes to the promotion ledger)")
    if len(why) > REASON_MAX:
        raise HealthPageError(f"the reason is {len(why)} characters long; at most {REASON_MAX}")
    return rollout.rollback(
        name,
        actor=ui_actor(username),
        reason=why,
        expected_champion=(expected_champion or "").strip() or None,
        engine=engine,
    )


@dataclass(frozen=True)
class RollbackOutcome:
    """What the page answers a rollback form with: a redirect to the page (done), or the page again
    with ``notice`` and the HTTP ``status`` (400: bad form, 409: nothing to roll back or moved since)."""

    status: int
    model_name: str | None
    notice: Notice | None = None
    result: rollout.RolloutResult | None = None

    @property
    def done(self) -> bool:
        return self.result is not None and self.result.action == "rollback"

    def redirect_to(self, page: str = "health") -> str:
        """The page URL (relative to the form's action) that shows the rollback."""
        name = self.model_name or ""
        return f"{page}?{urlencode({'rolled_back': name})}#row-{quote(name)}"


def submit_rollback(engine: sa.Engine, form: Mapping[str, str], *, username: str) -> RollbackOutcome:
    """Carry out a rollback form (fields ``model``, ``organization``, ``expected_champion``,
    ``reason``) for ``username``, who is already known to be allowed to roll back."""
    family = form.get("model", "")
    try:
        name = model_name_for(family, form.get("organization"))
        result = rollback_from_page(
            engine,
            family=family,
            organization_id=form.get("organization"),
            username=username,
            reason=form.get("reason", ""),
            expected_champion=form.get("expected_champion"),
        )
    except HealthPageError as exc:
        return RollbackOutcome(400, None, Notice("error", f"nothing rolled back: {exc}"))
    except rollout.RolloutError as exc:
        return RollbackOutcome(409, name, Notice("error", f"nothing rolled back: {exc}"))
    if result.action != "rollback":
        return RollbackOutcome(409, name, Notice("error", f"nothing rolled back: {result.reason}"), result)
    return RollbackOutcome(303, name, None, result)


def notice_for(rows: Iterable[HealthRow], model_name: str | None, username: str) -> Notice | None:
    """After a rollback redirect: this user's rollback of ``model_name``, if it is the model's latest
    ledger entry (read from the ledger, never from the URL, so a link cannot fake a notice)."""
    if not model_name:
        return None
    for row in rows:
        if row.model_name == model_name and row.ledger:
            entry = row.ledger[0]
            if entry.action == "rollback" and entry.actor == ui_actor(username):
                return Notice(
                    "ok",
                    f"{entry.model_name}: champion rolled back from v{entry.from_version} to "
                    f"v{entry.to_version} by {entry.actor}: {entry.reason}",
                )
    return None


# --- request checks --------------------------------------------------------------------------------


def csrf_token(secret: str, username: str) -> str:
    """The token a page's forms carry: an HMAC of the user under the server's secret (Airflow's JWT
    secret, shared by every api-server worker)."""
    if not secret:
        raise ValueError("no secret to sign the page's form token with")
    message = f"neuracrm-health-rollback:{username}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def csrf_token_matches(secret: str, username: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(csrf_token(secret, username).encode(), str(token).encode())


def same_origin(origin: str | None, referer: str | None, allowed: Iterable[str]) -> bool:
    """Whether the request came from a page of this server: its ``Origin`` (else ``Referer``) has the
    scheme, host and port of one of the ``allowed`` base URLs. Neither header: not same-origin."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    parts = urlsplit(source)
    here = (parts.scheme.lower(), parts.netloc.lower())
    return any(here == (urlsplit(url).scheme.lower(), urlsplit(url).netloc.lower()) for url in allowed if url)


# --- rendering: view models for the templates in templates/health/ ----------------------------------
#
# The templates only lay out what these plain, frozen views hold: numbers and times come formatted, and
# the decisions are made here (which rows are listed, which flags are on, what a rollback would restore,
# whether the form shows); the templates pick the markup and the words. The environment escapes every
# value the templates print (autoescape), so nothing here escapes, and a name a template uses that the
# view lacks raises (StrictUndefined) instead of printing nothing.

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("neuracrm_mlops.ops", "templates/health"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class AlertView:
    id: int
    severity: str
    title: str
    repeats: int | None  # how often it was raised, when more than once
    acknowledged: bool


@dataclass(frozen=True)
class LedgerLine:
    when: str
    action: str
    from_version: str | None
    to_version: str | None
    weight: str | None  # the canary weight of a canary or hold
    actor: str
    reason: str


@dataclass(frozen=True)
class ModelCell:
    name: str
    family: str
    organization_id: int | None
    registered: bool


@dataclass(frozen=True)
class ChampionCell:
    version: str | None
    previous: str | None
    fallback_why: str | None  # why the fallback answers users, when it does
    best_below_floor: bool  # the model answers although below the floor (nothing better)


@dataclass(frozen=True)
class ChallengerCell:
    version: str | None
    weight: str
    since: str | None
    accuracy: str | None
    outcomes: int


@dataclass(frozen=True)
class AccuracyCell:
    value: str | None  # the champion's live accuracy, None without outcomes
    has_champion: bool
    below_floor: bool
    floor: str
    outcomes: int
    judged_from: int | None  # the outcomes the monitor needs, while there are fewer


@dataclass(frozen=True)
class FlagCell:
    name: str  # drift | bias
    on: bool
    versions: tuple[str, ...]  # the versions the open alerts are about


@dataclass(frozen=True)
class RollbackCell:
    state: str  # no_champion | no_target | not_allowed | form
    target: str | None  # the version a rollback restores
    family: str
    organization: str  # "" for a shared model
    expected_champion: str | None
    model_name: str


@dataclass(frozen=True)
class RowView:
    row_id: str
    model_name: str
    model: ModelCell
    champion: ChampionCell
    challenger: ChallengerCell
    accuracy: AccuracyCell
    drift: FlagCell
    bias: FlagCell
    alerts: tuple[AlertView, ...]
    ledger: tuple[LedgerLine, ...]
    rollback: RollbackCell


@dataclass(frozen=True)
class ScenarioView:
    scenario: str
    prompt_name: str
    champion: str | None  # "v2 (1.1.0)"
    challenger: str | None
    weight: str
    previous: str | None
    calls: int  # the champion's analysed calls over the window
    success: str | None  # their success rate, None without analysed calls
    alerts: int
    ledger: tuple[LedgerLine, ...]


@dataclass(frozen=True)
class ScenariosView:
    readable: bool
    error: str | None
    window_hours: str
    scenarios: tuple[ScenarioView, ...]


@dataclass(frozen=True)
class PageView:
    username: str
    generated: str
    window_hours: str
    floor: str
    airflow_url: str
    notice: Notice | None
    total: int
    below_floor: int
    alerted: int
    canaries: int
    rows: tuple[RowView, ...]
    left_out: int  # quiet organizations not listed
    other_alerts: tuple[AlertView, ...]
    csrf: str
    reason_max: int
    scenarios: ScenariosView | None  # None: the caller read no scenarios (no section)


@dataclass(frozen=True)
class MessageView:
    title: str
    text: str
    link: str | None
    link_text: str


def render_template(name: str, **context: object) -> str:
    """``templates/health/<name>`` with ``context`` (values escaped; a missing one raises)."""
    return TEMPLATES.get_template(name).render(**context)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def alert_view(alert: AlertRow) -> AlertView:
    return AlertView(
        id=alert.id,
        severity=alert.severity,
        title=alert.title,
        repeats=alert.occurrences if alert.occurrences > 1 else None,
        acknowledged=alert.status == "acknowledged",
    )


def ledger_line(entry: LedgerEntry) -> LedgerLine:
    weight = entry.weight if entry.action in ("canary", "hold") else None  # the canary's weight
    return LedgerLine(
        when=_when(entry.created_at),
        action=entry.action,
        from_version=entry.from_version or None,
        to_version=entry.to_version or None,
        weight=f"{weight:.0%}" if weight is not None else None,
        actor=entry.actor,
        reason=entry.reason,
    )


def _flag(row: HealthRow, name: str, kinds: frozenset[str]) -> FlagCell:
    alerts = [a for a in row.open_alerts if a.kind in kinds]
    versions = sorted({a.model_version for a in alerts if a.model_version}, key=lambda v: (len(v), v))
    return FlagCell(name=name, on=bool(alerts), versions=tuple(versions))


def _rollback(row: HealthRow, can_rollback: bool) -> RollbackCell:
    if not row.champion:
        state = "no_champion"
    elif not row.rollback_target:
        state = "no_target"
    else:
        state = "form" if can_rollback else "not_allowed"
    return RollbackCell(
        state=state,
        target=row.rollback_target,
        family=row.family,
        organization="" if row.organization_id is None else str(row.organization_id),
        expected_champion=row.champion,
        model_name=row.model_name,
    )


def row_view(row: HealthRow, *, can_rollback: bool) -> RowView:
    """What a model's row shows, ready to lay out."""
    started = rollout.parse_time(row.canary_started_at)
    fallback = row.answered_by == "fallback"
    return RowView(
        row_id=row.row_id,
        model_name=row.model_name,
        model=ModelCell(row.model_name, row.family, row.organization_id, row.registered),
        champion=ChampionCell(
            version=row.champion or None,
            previous=row.previous or None,
            fallback_why=row.answered_why if fallback else None,
            best_below_floor=not fallback and row.answered_why.startswith("below floor"),
        ),
        challenger=ChallengerCell(
            version=row.challenger or None,
            weight=f"{row.canary_weight:.0%}",
            since=_when(started) if started else None,
            accuracy=_pct(row.challenger_accuracy) if row.challenger_accuracy is not None else None,
            outcomes=row.challenger_outcomes,
        ),
        accuracy=AccuracyCell(
            value=_pct(row.accuracy) if row.accuracy is not None else None,
            has_champion=bool(row.champion),
            below_floor=row.below_floor,
            floor=f"{row.accuracy_floor:.0%}",
            outcomes=row.outcomes,
            judged_from=row.min_outcomes if row.outcomes < row.min_outcomes else None,
        ),
        drift=_flag(row, "drift", DRIFT_KINDS),
        bias=_flag(row, "bias", BIAS_KINDS),
        alerts=tuple(alert_view(a) for a in row.open_alerts),
        ledger=tuple(ledger_line(e) for e in row.ledger),
        rollback=_rollback(row, can_rollback),
    )


def _scenario_version(ref: status.ScenarioVersionRef | None) -> str | None:
    if ref is None:
        return None
    return f"v{ref.version}" + (f" ({ref.semver})" if ref.semver else "")


def scenario_view(health: ScenarioHealth) -> ScenarioView:
    s = health.status
    return ScenarioView(
        scenario=s.scenario,
        prompt_name=s.prompt_name,
        champion=_scenario_version(s.champion),
        challenger=_scenario_version(s.challenger),
        weight=f"{s.canary_weight:.0%}",
        previous=_scenario_version(s.previous),
        calls=s.calls,
        success=_pct(s.success_rate) if s.success_rate is not None else None,
        alerts=s.open_alerts,
        ledger=tuple(ledger_line(e) for e in health.ledger),
    )


def scenarios_view(health: ScenariosHealth) -> ScenariosView:
    return ScenariosView(
        readable=health.readable,
        error=health.error,
        window_hours=f"{health.window_hours:g}",
        scenarios=tuple(scenario_view(s) for s in health.scenarios),
    )


def page_view(
    rows: Sequence[HealthRow],
    *,
    username: str,
    can_rollback: bool,
    csrf: str,
    other_alerts: Sequence[AlertRow] = (),
    notice: Notice | None = None,
    generated_at: dt.datetime | None = None,
    airflow_url: str = "/",
    forecast_rows: int = FORECAST_ROWS_SHOWN,
    pinned: str | None = None,
    scenarios: ScenariosHealth | None = None,
) -> PageView:
    """What the page shows (arguments as ``render_health_page``'s)."""
    settings = get_settings()
    listed, left_out = rows_to_list(rows, limit=forecast_rows, pinned=pinned)
    return PageView(
        username=username,
        generated=_when(generated_at or utcnow()),
        window_hours=f"{settings.monitor_window_hours:g}",
        floor=f"{settings.accuracy_floor:.0%}",
        airflow_url=airflow_url,
        notice=notice,
        total=len(rows),
        below_floor=sum(r.below_floor for r in rows),
        alerted=sum(bool(r.open_alerts) for r in rows),
        canaries=sum(r.canary_running for r in rows),
        rows=tuple(row_view(r, can_rollback=can_rollback) for r in listed),
        left_out=left_out,
        other_alerts=tuple(alert_view(a) for a in other_alerts),
        csrf=csrf,
        reason_max=REASON_MAX,
        scenarios=scenarios_view(scenarios) if scenarios is not None else None,
    )


def render_health_page(
    rows: Sequence[HealthRow],
    *,
    username: str,
    can_rollback: bool,
    csrf: str,
    other_alerts: Sequence[AlertRow] = (),
    notice: Notice | None = None,
    generated_at: dt.datetime | None = None,
    airflow_url: str = "/",
    forecast_rows: int = FORECAST_ROWS_SHOWN,
    pinned: str | None = None,
    scenarios: ScenariosHealth | None = None,
) -> str:
    """The page as one HTML document (inline CSS, no script, nothing loaded from elsewhere).

    ``rows`` in ``model_health``'s order; the table lists them as ``rows_to_list`` says (at most
    ``forecast_rows`` forecasts besides those that need attention, and the ``pinned`` model's row)
    and says how many quiet organizations it leaves out. The summary counts every row. ``scenarios``
    (``scenario_health``): the voice-scenario section, left out when None."""
    page = page_view(
        rows,
        username=username,
        can_rollback=can_rollback,
        csrf=csrf,
        other_alerts=other_alerts,
        notice=notice,
        generated_at=generated_at,
        airflow_url=airflow_url,
        forecast_rows=forecast_rows,
        pinned=pinned,
        scenarios=scenarios,
    )
    return render_template("page.html.j2", page=page)


def render_message_page(title: str, message: str, *, link: str | None = None, link_text: str = "") -> str:
    """A small page for refusals (not signed in, not allowed, bad request)."""
    view = MessageView(title=title, text=message, link=link or None, link_text=link_text or link or "")
    return render_template("message.html.j2", message=view)


def health_page_html(
    engine: sa.Engine,
    *,
    username: str,
    can_rollback: bool,
    csrf: str,
    rolled_back: str | None = None,
    notice: Notice | None = None,
    airflow_url: str = "/",
) -> str:
    """The page for ``username``, read fresh: rows, the voice scenarios, the alerts no row shows, and
    a notice (the one given, else this user's rollback of ``rolled_back`` read back from the ledger)."""
    open_alerts = list_alerts(engine, open_only=True, limit=OPEN_ALERTS_READ)
    rows = model_health(engine, open_alerts=open_alerts)
    scenarios = scenario_health(engine, open_alerts=open_alerts)
    return render_health_page(
        rows,
        username=username,
        can_rollback=can_rollback,
        csrf=csrf,
        other_alerts=alerts_without_row(engine, rows, open_alerts=open_alerts),
        notice=notice or notice_for(rows, rolled_back, username),
        airflow_url=airflow_url,
        pinned=rolled_back,
        scenarios=scenarios,
    )
