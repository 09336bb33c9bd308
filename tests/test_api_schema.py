"""The cluster API against its own OpenAPI document: schemathesis fuzzes every operation.

One API over two real observed workers on Redis, with a token (so the changing endpoints
run past their 401) and a harmless task on the execute allowlist. Hypothesis is bounded
and derandomized, so a run is short and every run sends the same requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from celery import Celery
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from celery_observe.cluster.api import ApiSettings, create_app

from .conftest import BROKERS, answering_workers, broker_url
from .workers import WorkerProcess

pytestmark = pytest.mark.broker
TOKEN = "schema-fuzz-token-0123456789abcdef"
HARMLESS = "tests.workerapp.add"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]


#: The API is built at import, so the schema's operations become one test each; it
#: connects to the broker only when asked, by then the workers below are up.
QUEUE = f"observe-schema-{uuid.uuid4().hex[:12]}"
BROKER = BROKERS["redis"][2].format(db=15)
DEADLINES = "_kombu.binding_deadlines"


def fuzzed_app() -> FastAPI:
    """The API as a user mounts it: token set, one harmless task allowed to execute."""
    client = Celery("fuzz", broker=BROKER, set_as_current=False)
    client.conf.control_exchange = QUEUE
    client.conf.task_default_queue = QUEUE
    return create_app(client, ApiSettings(
        token=TOKEN, execute_allowlist=(HARMLESS,), timeout=2, discovery_timeout=0.5,
        rate_limit_per_minute=100_000))


schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app())


@schema.hook("flatmap_path_parameters")
def send_the_allowed_task_too(context: schemathesis.HookContext,
                              path_parameters: dict[str, Any] | None,
                              ) -> st.SearchStrategy[Any]:
    """Execute gets the allowed name as often as a generated one, so the bodies it is sent
    reach a task (a generated name only ever meets the allowlist's 403)."""
    if not path_parameters or "task_name" not in path_parameters:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, "task_name": HARMLESS}])


@pytest.fixture(scope="module", autouse=True)
def workers() -> Iterator[list[WorkerProcess]]:
    """Two observed workers on Redis, answering remote control, for the whole fuzz run;
    the API's lifespan ends (closing its broker connections) before they stop, and the
    run's keys go from Redis after."""
    try:
        for started in answering_workers(broker_url("redis", db=15), QUEUE):
            try:
                yield started
            finally:
                shutdown_lifespans()
    finally:
        keys = redis.Redis.from_url(BROKER)
        for key in keys.scan_iter(match=f"*{QUEUE}*"):
            keys.delete(key)
        # kombu's binding expiry keeps a deadline per exchange binding, in one shared set
        mine = [name for name in keys.zrange(DEADLINES, 0, -1) if QUEUE.encode() in name]
        if mine:
            keys.zrem(DEADLINES, *mine)
        keys.close()


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_its_schema(case: schemathesis.Case) -> None:
    """No request the schema allows (or breaks) gets a 5xx or an answer off its schema."""
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
