"""A psutil module whose memory read of one process fails: the OS boundary of the monitor."""

from __future__ import annotations

import types
from typing import Any

import psutil


def psutil_failing_for(pid: int, error: type[psutil.Error]) -> types.SimpleNamespace:
    """psutil as the resource monitor uses it, raising ``error`` reading ``pid``'s memory."""

    class Process:
        """A real psutil.Process, but for the memory of ``pid``."""

        def __init__(self, process_id: int) -> None:
            self._real = psutil.Process(process_id)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def memory_info(self) -> Any:
            if self._real.pid == pid:
                raise error(pid)
            return self._real.memory_info()

    return types.SimpleNamespace(Process=Process, NoSuchProcess=psutil.NoSuchProcess,
                                 ZombieProcess=psutil.ZombieProcess,
                                 AccessDenied=psutil.AccessDenied)
