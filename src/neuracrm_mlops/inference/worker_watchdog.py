"""A serving worker ends when its supervisor dies, so that no orphan keeps the port.

``bentoml serve`` runs a supervisor (the circus arbiter) that starts the worker processes. When the
supervisor is killed with ``kill -9`` it cannot stop them: without this watchdog a worker goes on
answering on the port with nobody managing it, and the next ``bentoml serve`` fails with "Address
already in use".

``start_worker_watchdog`` (called once in the worker) starts a daemon thread that checks every
``poll_seconds`` whether the process that started the worker is still its parent (a dead parent's
children are re-parented, so ``os.getppid()`` changes). It polls rather than asking the kernel for a
signal (``prctl(PR_SET_PDEATHSIG)``): that is Linux-only, fires when the parent *thread* that
spawned the worker ends, and a signal would skip the flush below; the poll is portable and ends the
worker within ``poll_seconds`` plus the flush.

When the parent is gone the watchdog runs ``on_orphaned`` (the service passes its graceful stop:
write the queued prediction rows) for at most ``flush_seconds``, then ends the process with
``os._exit``: a prompt exit is safe because every answered prediction is already in the prediction
journal (``prediction_log.PredictionJournal``), which the next start replays if the flush did not
finish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

ORPHANED_EXIT_CODE = 70  # EX_SOFTWARE: the worker ended itself because its supervisor died


def start_worker_watchdog(
    on_orphaned: Callable[[], None] | None = None,
    *,
    poll_seconds: float = 0.5,
    flush_seconds: float = 3.0,
) -> threading.Thread | None:
    """Start the watchdog thread for this process (None when the process has no parent to watch:
    started by init, or already orphaned)."""
    parent = os.getppid()
    if parent <= 1:
        log.warning("the worker's parent is already gone (ppid %d): no supervisor to watch", parent)
        return None
    thread = threading.Thread(
        target=_watch,
        args=(parent, on_orphaned, poll_seconds, flush_seconds),
        name="neuracrm-worker-watchdog",
        daemon=True,
    )
    thread.start()
    return thread


def _watch(
    parent: int, on_orphaned: Callable[[], None] | None, poll_seconds: float, flush_seconds: float
) -> None:
    stop = threading.Event()
    while os.getppid() == parent:
        stop.wait(poll_seconds)
    log.error(
        "the serving supervisor (pid %d) died: this worker (pid %d) stops so that its port is freed",
        parent,
        os.getpid(),
    )
    if on_orphaned is not None:
        flusher = threading.Thread(target=_run_quietly, args=(on_orphaned,), daemon=True)
        flusher.start()
        flusher.join(flush_seconds)
        if flusher.is_alive():
            log.error("the flush did not finish within %.1f s; the journal keeps the rows", flush_seconds)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream must not keep the orphan alive
            stream.flush()
    os._exit(ORPHANED_EXIT_CODE)


def _run_quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        log.exception("the flush before the orphaned worker's exit failed; the journal keeps the rows")
