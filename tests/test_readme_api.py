"""README's `curl` examples of the cluster HTTP API are what the API answers.

Each example runs against real workers; its status and the keys README shows, at every
level README shows them, must be the answer's. Regenerate them with
``python -m tests.readme_api``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_observe.cluster.api import observe_router

from .readme_api import (
    EXAMPLES,
    README_QUEUE,
    Cluster,
    Example,
    example_name,
    matches,
    readme_block,
    render,
    running_cluster,
    shape,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The README's scene: two workers, tasks running, waiting, failed and unconsumed."""
    queue = f"observe-test-{uuid.uuid4().hex[:12]}"
    with running_cluster(tmp_path_factory.mktemp("readme-api"), queue) as running:
        yield running


def test_readme_shows_every_example_in_order() -> None:
    """README's commands are the examples', one for each."""
    assert [command for command, _ in readme_block()] == [
        render(example, 200, "{}")[0] for example in EXAMPLES]


def test_every_endpoint_of_the_api_has_an_example() -> None:
    """Each path and method the router serves (but the dashboard's) is in an example."""
    router = observe_router(Celery("readme", broker="memory://", set_as_current=False))
    served = {(method, route.path) for route in router.routes if route.include_in_schema
              for method in route.methods}  # type: ignore[attr-defined]
    shown = {(example.method, example.path.split("?")[0]) for example in EXAMPLES}
    templates = {(method, path) for method, path in served if "{" in path}
    for method, path in templates:
        head, tail = path.split("{")[0], path.split("}")[1]
        assert any(m == method and p.startswith(head) and p.endswith(tail) and p != path
                   for m, p in shown), f"{method} {path} has no README example"
    missing = {(m, p) for m, p in served - templates if (m, p) not in shown}
    assert not missing, f"no README example for {sorted(missing)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=example_name)
def test_readme_answer_has_the_real_status_and_keys(cluster: Cluster, example: Example) -> None:
    """The answer README shows has the real answer's status and keys."""
    shown = dict(readme_block())[render(example, 200, "{}")[0]]
    status, text = cluster.ask(example)
    expected_status = int(shown[-1].split()[-1]) if shown[-1].startswith("# HTTP") else 200
    assert status == expected_status, text
    if example.path == "/metrics":
        real = {_series_key(line) for line in text.splitlines() if not line.startswith("#")}
        assert shown and {_series_key(line) for line in shown} <= real, text
        return
    body = "".join(line for line in shown if not line.startswith("# HTTP")).replace(
        README_QUEUE, cluster.queue)  # worker and queue names are keys in some answers
    assert matches(shape(body), json.loads(text)), f"README: {body}\nreal: {text}"


def _series_key(line: str) -> tuple[str, frozenset[str]]:
    """A sample's name and label names: what README's /metrics lines promise."""
    name, _, rest = line.partition("{")
    labels = frozenset(part.split("=")[0] for part in rest.rsplit("}", 1)[0].split(",")
                       if "=" in part)
    return name.split(" ")[0], labels
