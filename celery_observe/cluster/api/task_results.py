"""One task's state: what the result backend stored, and where the workers have it now."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.backends.base import DisabledBackend
from celery.result import AsyncResult

from ...redaction import Masker
from ...shapes import ClusterHistory, ClusterTasks
from ..bodies import TaskState

#: A result shown while results are hidden (they can hold what task arguments hold).
RESULT_REDACTED = ("<redacted: set ApiSettings(show_results=True) or `observe serve "
                   "--show-results` to see results>")

def backend_enabled(app: Celery) -> bool:
    return not isinstance(app.backend, DisabledBackend)


def task_state(app: Celery, task_id: str, tasks: ClusterTasks, history: ClusterHistory,
               *, show_results: bool, mask: Masker) -> TaskState | None:
    """The task's state, or None when neither the backend nor any worker knows the id.

    The backend says PENDING for any id it never stored, so an id is known when the
    backend has more than that, or a worker holds or finished it.
    """
    worker, worker_state = None, None
    for state, held in (("STARTED", tasks["running"]), ("RECEIVED", tasks["reserved"]),
                        ("SCHEDULED", tasks["scheduled"])):
        for task in held:
            if task["id"] == task_id:
                worker, worker_state = task["worker"], state
    finished = next((t for t in history["tasks"] if t["id"] == task_id), None)
    if finished is not None and worker is None:
        worker = finished["worker"]
    result = AsyncResult(task_id, app=app) if backend_enabled(app) else None
    state = result.state if result is not None else "PENDING"
    if state == "PENDING" and worker_state is not None:
        state = worker_state
    elif state == "PENDING" and finished is not None:
        state = finished["state"].upper()
    if state == "PENDING" and worker is None:
        return None
    ready = result is not None and result.ready()
    shown: Any = None
    traceback = None
    if ready and result is not None:
        if show_results:
            shown = mask(repr(result.result)) if result.failed() else result.result
            traceback = mask(result.traceback) if result.traceback else None
        else:
            shown = RESULT_REDACTED
    return TaskState(task_id=task_id, state=state, ready=ready,
                     successful=result.successful() if ready and result is not None else None,
                     result=shown, traceback=traceback, worker=worker)
