"""The promotion ledger: an append-only record of every alias or traffic-weight change.

MLflow keeps no alias history, so the ledger is where "who moved what, from which version to which,
why, on which numbers" lives, and where a rollback finds "the previous champion": the ``promote``
and ``rollback`` rows of alias ``champion`` are the alias history, whoever moved it. The table refuses
UPDATE and DELETE (database triggers, see migrations 0001 and 0007): rows are only ever appended,
and the one change a row may see is its ``state`` finishing.

States: an alias or weight move (``neuracrm_mlops.release.state``) writes its row ``pending`` and
commits it before its registry calls, then marks it ``done``; a crash in between leaves the row
``pending`` and ``rollout_state.reconcile_pending`` finishes the move (``done``) or undoes it
(``reverted``). Only ``done`` rows are alias history (``champion_moves``); every read here shows the
state (``LedgerEntry.state``). Rows that change nothing in the registry are written ``done`` at once.

Write a row in the same transaction as the change it records by passing an open connection::

    with engine.begin() as conn:
        ...  # the change itself
        record_change(conn, actor=actor_for_dag(context), model_name="lead_scoring", action="promote",
                      alias="champion", from_version="3", to_version="4", reason="canary passed",
                      metrics={"accuracy": 0.91})
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import getpass
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import sqlalchemy as sa

from neuracrm_mlops.store.db.schema import PromotionLedgerEntry, utcnow

ACTIONS = ("register", "canary", "promote", "reject", "rollback", "abort", "hold", "publish")
# ``publish``: a voice scenario's champion pushed to Retell AI (release.retell_publish); it moves no
# alias, its metrics hold the Retell LLM and agent versions that now carry the scenario
# the actions that change which version holds the ``champion`` alias
CHAMPION_ALIAS = "champion"
CHAMPION_ACTIONS = ("promote", "rollback")
PENDING, DONE, REVERTED = "pending", "done", "reverted"
STATES = (PENDING, DONE, REVERTED)

_ACTOR_MAX = 200  # PromotionLedgerEntry.actor is VARCHAR(200)
_VERSION_MAX = 32
_ALIAS_MAX = 32
_MODEL_NAME_MAX = 128


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    created_at: dt.datetime
    actor: str
    model_name: str
    organization_id: int | None
    action: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    weight: float | None
    reason: str
    metrics: dict[str, Any]
    state: str = DONE  # pending | done | reverted
    registry_plan: list[dict[str, Any]] | None = None  # the move's registry calls (rollout_state)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays become Python numbers and lists, NaN and
    infinities become None, tuples and sets become lists, dict keys become strings, datetimes and
    paths become strings; anything else unknown becomes its ``str``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__.split(".")[0] == "numpy":
        # numpy scalars (np.float64, np.int64, np.bool_) have item(); arrays have tolist()
        if hasattr(value, "tolist"):
            return json_safe(value.tolist())
        if hasattr(value, "item"):
            return json_safe(value.item())
    return str(value)


def _version(value: str | int | None, field: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _VERSION_MAX:
        raise ValueError(f"{field} must be a version of 1 to {_VERSION_MAX} characters, got {value!r}")
    return text


@contextlib.contextmanager
def recorded_move(engine: sa.Engine, **row: Any) -> Iterator[int]:
    """The ledger row (``record_change``'s fields) of a registry move made in the ``with`` block: the row
    is committed only when the block (its registry calls) succeeds, and rolled back when it raises."""
    with engine.begin() as conn:
        yield record_change(conn, **row)


def record_change(
    conn_or_engine: sa.Connection | sa.Engine,
    *,
    actor: str,
    model_name: str,
    action: str,
    reason: str,
    organization_id: int | None = None,
    alias: str | None = None,
    from_version: str | int | None = None,
    to_version: str | int | None = None,
    weight: float | None = None,
    metrics: Mapping[str, Any] | None = None,
    state: str = DONE,
    registry_plan: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Append one ledger row and return its id.

    With an ``sa.Connection`` the row joins the caller's transaction (it is committed, or rolled back,
    with the change it records); with an ``sa.Engine`` it is written in a transaction of its own.
    ``weight`` is the challenger's traffic share (0..1). ``metrics`` is stored as plain JSON
    (numpy values become numbers, NaN and infinities None). ``state`` ``pending`` writes the row
    before the move it records (then :func:`finish_change`); ``registry_plan`` is that move's
    registry calls. Raises ValueError on a bad argument.
    """
    if state not in (PENDING, DONE):
        raise ValueError(f"a new ledger row is {PENDING} or {DONE}, got {state!r}")
    if action not in ACTIONS:
        raise ValueError(f"ledger action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not actor or not actor.strip():
        raise ValueError("ledger actor must name who or what made the change")
    if not model_name or len(model_name) > _MODEL_NAME_MAX:
        raise ValueError(f"ledger model_name must be 1 to {_MODEL_NAME_MAX} characters, got {model_name!r}")
    if not reason or not reason.strip():
        raise ValueError("ledger reason must say why the change was made")
    if alias is not None and (not alias or len(alias) > _ALIAS_MAX):
        raise ValueError(f"ledger alias must be 1 to {_ALIAS_MAX} characters, got {alias!r}")
    if weight is not None:
        weight = float(weight)
        if not 0.0 <= weight <= 1.0:  # also refuses NaN
            raise ValueError(f"ledger weight is a traffic share between 0 and 1, got {weight}")
    values = {
        "created_at": utcnow(),
        "actor": actor.strip()[:_ACTOR_MAX],
        "model_name": model_name,
        "organization_id": organization_id,
        "action": action,
        "alias": alias,
        "from_version": _version(from_version, "from_version"),
        "to_version": _version(to_version, "to_version"),
        "weight": weight,
        "reason": reason.strip(),
        "metrics": json_safe(dict(metrics or {})),
        "state": state,
        "registry_plan": None if registry_plan is None else json_safe([dict(c) for c in registry_plan]),
    }
    statement = sa.insert(PromotionLedgerEntry).values(**values).returning(PromotionLedgerEntry.id)
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.begin() as conn:
            entry_id = conn.scalar(statement)
    else:
        entry_id = conn_or_engine.scalar(statement)
    assert entry_id is not None
    return int(entry_id)


def finish_change(engine: sa.Engine | sa.Connection, entry_id: int, state: str = DONE) -> bool:
    """Mark the pending row ``entry_id`` ``done`` or ``reverted`` (the one UPDATE the ledger's
    triggers allow); False when it was not pending (already finished: nothing changes)."""
    if state not in (DONE, REVERTED):
        raise ValueError(f"a pending ledger row finishes {DONE} or {REVERTED}, got {state!r}")
    statement = (
        sa.update(PromotionLedgerEntry)
        .where(PromotionLedgerEntry.id == entry_id, PromotionLedgerEntry.state == PENDING)
        .values(state=state)
    )
    if isinstance(engine, sa.Engine):
        with engine.begin() as conn:
            return conn.execute(statement).rowcount == 1
    return engine.execute(statement).rowcount == 1


def pending_entries(engine: sa.Engine | sa.Connection, *, model_name: str | None = None) -> list[LedgerEntry]:
    """The ``pending`` rows (of ``model_name``, or of every model), oldest first."""
    table = PromotionLedgerEntry.__table__
    query = sa.select(table).where(table.c.state == PENDING).order_by(table.c.id)
    if model_name is not None:
        query = query.where(table.c.model_name == model_name)
    rows = _read(engine, query)
    return [entry_from_row(row) for row in rows]


def _read(engine: sa.Engine | sa.Connection, query: sa.Executable) -> Sequence[sa.Row[Any]]:
    if isinstance(engine, sa.Engine):
        with engine.connect() as conn:
            return conn.execute(query).all()
    return engine.execute(query).all()


def entry_from_row(row: sa.Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        created_at=row.created_at,
        actor=row.actor,
        model_name=row.model_name,
        organization_id=row.organization_id,
        action=row.action,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        weight=row.weight,
        reason=row.reason,
        metrics=dict(row.metrics or {}),
        state=row.state,
        registry_plan=list(row.registry_plan) if row.registry_plan is not None else None,
    )


def latest_entries(
    engine: sa.Engine | sa.Connection, *, model_name: str | None = None, limit: int = 20
) -> list[LedgerEntry]:
    """The last ``limit`` ledger rows (of ``model_name``, or of every model), newest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = sa.select(PromotionLedgerEntry.__table__).order_by(PromotionLedgerEntry.id.desc()).limit(limit)
    if model_name is not None:
        query = query.where(PromotionLedgerEntry.model_name == model_name)
    rows = _read(engine, query)
    return [entry_from_row(row) for row in rows]


def champion_moves(engine: sa.Engine | sa.Connection, model_name: str) -> list[ChampionMove]:
    """Every move of ``model_name``'s ``champion`` alias, oldest first: (action, from_version,
    to_version) of its ``promote`` and ``rollback`` rows, whoever made them (a rollout, the monitor,
    the CLI's ``rollback`` and ``rollback --to``, the health page). Only ``done`` rows: a pending
    move (under way, or cut short by a crash) and a reverted one are not history. On a connection,
    rows written earlier in its transaction are included."""
    query = (
        sa.select(
            PromotionLedgerEntry.action, PromotionLedgerEntry.from_version, PromotionLedgerEntry.to_version
        )
        .where(
            PromotionLedgerEntry.model_name == model_name,
            PromotionLedgerEntry.alias == CHAMPION_ALIAS,
            PromotionLedgerEntry.action.in_(CHAMPION_ACTIONS),
            PromotionLedgerEntry.to_version.is_not(None),
            PromotionLedgerEntry.state == DONE,
        )
        .order_by(PromotionLedgerEntry.id)
    )
    rows = _read(engine, query)
    return [(str(row.action), row.from_version, str(row.to_version)) for row in rows]


def champion_history(
    engine: sa.Engine | sa.Connection, model_name: str, *, current_version: str | int
) -> ChampionHistory:
    """``current_version``'s earlier champions, read from the ledger's champion alias history
    (:func:`champion_history_of` has the rules)."""
    return champion_history_of(champion_moves(engine, model_name), current_version)


def previous_champion(
    engine: sa.Engine | sa.Connection, model_name: str, *, current_version: str | int
) -> str | None:
    """The version a rollback from ``current_version`` should restore, read from the ledger.

    The most recent champion before ``current_version``'s tenure that was not rolled back since,
    walking the champion alias history (promotions and rollbacks, an undo of a rollback restoring
    the history before it). So after promote 1, promote 2, promote 3, rollback to 2, the previous
    champion of 2 is 1 (not 3, which was rolled back), and of 3 is 2; after promote 2, promote 3,
    rollback to 2, rollback --to 3 (the undo), the previous champion of 3 is 2 again. For a version
    that is not champion now, the answer is as the history stood when it last became champion.
    None when ``current_version`` never became champion in the ledger, or nothing eligible was
    champion before it (the registry checks are ``rollout``'s, see ``rollout.plan_rollback``).
    """
    return champion_history(engine, model_name, current_version=current_version).previous


def previous_champion_from(moves: Sequence[ChampionMove], current_version: str | int) -> str | None:
    """:func:`previous_champion` on champion moves already read: (action, from_version, to_version)
    rows of one model with alias ``champion``, oldest first."""
    return champion_history_of(moves, current_version).previous


def actor_for_dag(context_or_dag_id: Mapping[str, Any] | str, run_id: str | None = None) -> str:
    """``"dag:<dag_id>/<run_id>"`` from an Airflow task context, or from a DAG id and a run id."""
    if isinstance(context_or_dag_id, str):
        dag_id = context_or_dag_id
        if run_id is None:
            raise ValueError("actor_for_dag needs a run_id with a DAG id")
    else:
        context = context_or_dag_id
        dag_id = _context_dag_id(context)
        run_id = run_id or _context_run_id(context)
        if run_id is None:
            raise ValueError("the Airflow context carries no run_id")
    return f"dag:{dag_id}/{run_id}"[:_ACTOR_MAX]


def _context_dag_id(context: Mapping[str, Any]) -> str:
    for key in ("dag", "dag_run", "ti", "task_instance"):
        dag_id = getattr(context.get(key), "dag_id", None)
        if dag_id:
            return str(dag_id)
    raise ValueError("the Airflow context carries no DAG (keys dag, dag_run or ti)")


def _context_run_id(context: Mapping[str, Any]) -> str | None:
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    return str(run_id) if run_id else None


def actor_for_cli() -> str:
    """``"cli:<OS user>"`` (``cli:unknown`` when the OS cannot name the user)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        user = os.environ.get("USER") or "unknown"
    return f"cli:{user}"[:_ACTOR_MAX]


# --- the champion alias history: which version a rollback restores ---------------------------------

# One move of the ``champion`` alias, as the ledger records it: (action, from_version, to_version),
# action ``promote`` or ``rollback``.
ChampionMove = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class EarlierChampion:
    """A version that held the champion alias before; ``rolled_back``: a rollback took the alias away
    from it and it has not been champion again since (an undo of that rollback clears it)."""

    version: str
    rolled_back: bool


@dataclass(frozen=True)
class ChampionHistory:
    """What the alias history says about ``current``.

    ``known``: a move in the history made ``current`` champion (otherwise the history says nothing
    about it, e.g. the alias was set outside the platform). ``earlier``: the champions before
    ``current``'s tenure, most recent first, each once, never ``current`` itself; read as the history
    stood right after the latest move that made ``current`` champion."""

    current: str
    known: bool
    earlier: tuple[EarlierChampion, ...]

    @property
    def candidates(self) -> tuple[EarlierChampion, ...]:
        """The earlier champions in the order a rollback tries them: those in good standing (most
        recent first), then those rolled back (most recent first, the last resort)."""
        good = tuple(e for e in self.earlier if not e.rolled_back)
        return good + tuple(e for e in self.earlier if e.rolled_back)

    @property
    def previous(self) -> str | None:
        """The most recent earlier champion that was not rolled back since, None when there is none."""
        return next((e.version for e in self.earlier if not e.rolled_back), None)


@dataclass(frozen=True)
class _AliasState:
    tenures: tuple[str, ...]  # the champions in the order they held the alias (the current one last)
    rolled_back: frozenset[str]


def _move(state: _AliasState, action: str, from_version: str | None, to_version: str) -> _AliasState:
    tenures = list(state.tenures)
    leaving = from_version if from_version is not None else (tenures[-1] if tenures else None)
    if leaving is not None and (not tenures or tenures[-1] != leaving):
        # the history starts mid-way, or the alias was moved outside the platform: ``leaving`` was
        # the champion at that moment all the same
        tenures.append(leaving)
    rolled_back = set(state.rolled_back)
    if action == "rollback" and leaving is not None and leaving != to_version:
        rolled_back.add(leaving)
    rolled_back.discard(to_version)  # champion again: reinstated
    if not tenures or tenures[-1] != to_version:
        tenures.append(to_version)
    return _AliasState(tuple(tenures), frozenset(rolled_back))


def _is_undo(move: ChampionMove, last: ChampionMove | None) -> bool:
    """``move`` is a rollback straight back to the version the previous move (a rollback) left."""
    return (
        last is not None
        and move[0] == "rollback"
        and last[0] == "rollback"
        and move[2] == last[1]
        and move[1] in (None, last[2])
    )


def champion_history_of(moves: Sequence[ChampionMove], current_version: str | int) -> ChampionHistory:
    """Replay the champion alias moves of one model (oldest first) and describe ``current_version``'s
    earlier champions; the rules are in the module docstring.

    - ``promote`` X -> Y and ``rollback`` X -> Y both make Y champion (and clear Y's rolled-back
      mark); a ``rollback`` marks X rolled back.
    - A ``rollback`` Y -> X right after a ``rollback`` X -> Y undoes it: the history is as it was
      before the rollback X -> Y (X is no longer marked, Y is not marked either).
    Rows without a ``to_version`` are ignored.
    """
    current = str(current_version)
    states = [_AliasState((), frozenset())]  # states[i]: after the first i moves that count
    last: ChampionMove | None = None
    as_current: _AliasState | None = None
    for move in moves:
        action, from_version, to_version = move
        if to_version is None or action not in ("promote", "rollback"):
            continue
        # an undo restores the state before the rollback it undoes
        undo = _is_undo(move, last)
        state = states[-2] if undo else _move(states[-1], action, from_version, to_version)
        states.append(state)
        last = move
        if state.tenures and state.tenures[-1] == current:
            as_current = state
    if as_current is None:
        return ChampionHistory(current, False, ())
    seen: set[str] = {current}
    earlier: list[EarlierChampion] = []
    for version in reversed(as_current.tenures):
        if version not in seen:
            seen.add(version)
            earlier.append(EarlierChampion(version, version in as_current.rolled_back))
    return ChampionHistory(current, True, tuple(earlier))
