"""What the cluster API lets through, and how long its answers stay cached."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ...config import positive_seconds
from ...named_caches import CACHE_SPECS
from .shared_cache import check_url

#: Seconds each endpoint's answer is cached, from the caching seed's TTLs.
ENDPOINT_TTLS: Mapping[str, float] = MappingProxyType({
    "tasks": CACHE_SPECS["task_status"][0],
    "workers": CACHE_SPECS["worker_status"][0],
    "queues": CACHE_SPECS["queue_status"][0],
    "summary": CACHE_SPECS["metrics_summary"][0],
    "health": CACHE_SPECS["health_check"][0],
})


@dataclass(frozen=True)
class ApiSettings:
    """Settings of one mounted API.

    ``token`` turns on the endpoints that change something (revoke, execute, cache
    invalidation): they need ``Authorization: Bearer <token>`` and answer 403 while no
    token is set. ``read_token``, when set, is needed by every other endpoint too.
    """

    token: str | None = None
    read_token: str | None = None
    #: Task names ``POST /tasks/{name}/execute`` may send; none by default.
    execute_allowlist: tuple[str, ...] = ()
    #: Show task results and tracebacks in ``/tasks/{id}/status`` (redacted by default).
    show_results: bool = False
    #: Requests per client and minute that may cause a broadcast (``use_cache=false``, POST).
    rate_limit_per_minute: int = 120
    timeout: float = 1.0
    discovery_timeout: float = 0.25
    #: Seconds a worker that stopped answering is reported missing, then forgotten.
    forget_after: float = 60.0
    queue_threshold: int = 1000
    #: Queues to report beside the configured and consumed ones.
    queues: tuple[str, ...] = field(default_factory=tuple)
    #: Redis the API's replicas share their cached answers in (``redis://host:6379/3``), so
    #: N replicas cause one broadcast per TTL, not N; one database per cluster. Needs
    #: ``pip install 'celery-observe[redis]'``. Not in the repr: it may hold a password.
    shared_cache_url: str | None = field(default=None, repr=False)
    #: Seconds between the dashboard's frames (``GET /events``), shared by all open pages.
    events_interval: float = 5.0

    def __post_init__(self) -> None:
        for name in ("token", "read_token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) < 16):
                raise ValueError(f"ApiSettings({name}=...): a token needs at least 16 "
                                 "characters; generate one with: python -c 'import secrets; "
                                 "print(secrets.token_urlsafe(32))'")
        if self.shared_cache_url is not None:
            check_url(self.shared_cache_url)
        if self.rate_limit_per_minute < 1:
            raise ValueError("ApiSettings(rate_limit_per_minute=...): expected at least 1, "
                             f"got {self.rate_limit_per_minute!r}")
        positive_seconds("ApiSettings(events_interval=...)", self.events_interval)
