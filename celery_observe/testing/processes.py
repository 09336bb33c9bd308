"""Subprocesses in their own session, tracked so that :func:`reap_all` ends every one.

A process started with :func:`spawn` leads a new session, so its children (a worker's pool)
are in its process group and go with it. A script calls :func:`reap_all` in a ``finally``
and at exit, so an interrupted run leaves no worker or pool child behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Tracked:
    log_path: Path
    remove_log: bool
    signalled: bool = False


_LIVE: dict[subprocess.Popen[bytes], _Tracked] = {}
_LOCK = threading.Lock()


def spawn(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, remove_log: bool = False) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own, its output (both streams) into ``log_path``,
    and track it; with ``remove_log``, :func:`end_process` deletes the log."""
    with log_path.open("wb") as out:
        process = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    with _LOCK:
        _LIVE[process] = _Tracked(log_path, remove_log)
    return process


def signal_once(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``process`` unless it has exited or, tracked, was asked to stop
    before (a second SIGTERM would turn a worker's warm shutdown cold)."""
    with _LOCK:
        tracked = _LIVE.get(process)
        if tracked is not None:
            if tracked.signalled:
                return
            tracked.signalled = True
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``process`` leads (whatever of it is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def release(process: subprocess.Popen[bytes]) -> None:
    """Stop tracking ``process`` (it has exited); deletes its log if spawned to."""
    with _LOCK:
        tracked = _LIVE.pop(process, None)
    if tracked is not None and tracked.remove_log:
        with contextlib.suppress(OSError):
            tracked.log_path.unlink()


def end_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ask ``process`` to stop (SIGTERM, once), wait up to ``timeout`` s, then kill its
    group, and kill what is left of the group anyway (pool children that outlived it)."""
    try:
        signal_once(process)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.wait(10)
        kill_group(process)
    finally:
        release(process)


def reap_all(timeout: float = 15.0) -> None:
    """End every tracked process: ask all at once, then kill what is left after ``timeout``."""
    with _LOCK:
        processes = list(_LIVE)
    for process in processes:
        signal_once(process)
    deadline = time.monotonic() + timeout
    for process in processes:
        end_process(process, timeout=max(0.1, deadline - time.monotonic()))
