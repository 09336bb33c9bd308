"""README's `curl` examples of the cluster HTTP API: made by running them, checked by a test.

    python -m tests.readme_api      # runs the examples against real workers, rewrites README

The examples run against two prefork workers on Redis, with a task running, one waiting for
its ETA, one failed, and one in a queue no worker consumes. Long bodies are shortened where
the README shows ``{...}`` (a whole value) or ``...`` (the rest of a list);
``tests/test_readme_api.py`` runs the same requests and holds README's keys to the answers'.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from celery_observe import stamp_publish_times
from celery_observe.testing import end_process, wait_until

from .conftest import answering_workers, broker_url
from .test_serve import PREFIX, TOKEN, ServeProcess
from .workers import REPO

README = REPO / "README.md"
BEGIN, END = "<!-- api-examples:begin -->", "<!-- api-examples:end -->"
HOST = "localhost:8000"
#: The queue of README's scene; its workers are readme-1@localhost and readme-2@localhost.
README_QUEUE = "readme"
WIDTH = 92
#: Where the README shortens an answer: a value shown as {...}, or a list cut to one item.
ELIDED = "{...}"
#: Prometheus families README shows of the API's /metrics page.
METRIC_FAMILIES = ("celery_workers_count", "celery_observe_api_workers", "celery_queues_backlog",
                   "celery_queue_consumers", "celery_observe_api_broker_up")


#: How README's commands name the tasks the examples ask about.
SHELL_IDS = {"active": "$RUNNING_ID", "scheduled": "$WAITING_ID"}


@dataclass(frozen=True)
class Example:
    """One request README shows; ``{active}``, ``{scheduled}`` stand for those tasks' ids."""

    path: str
    method: str = "GET"
    token: bool = False
    body: str | None = None
    #: Keys whose values README shows as {...} (too long to read there).
    elide: tuple[str, ...] = ()


EXAMPLES = (
    Example("/health", elide=("details",)),
    Example("/status", elide=("worker_stats", "queue_details")),
    Example("/workers/status"),
    Example("/tasks/status"),
    Example("/tasks?state=failure&limit=1"),
    Example("/tasks/{active}/status"),
    Example("/tasks/00000000-0000-0000-0000-000000000000/status"),
    Example("/queues/status"),
    Example("/metrics/summary"),
    Example("/stats"),
    Example("/metrics"),
    Example("/prometheus/targets"),
    Example("/cache/stats"),
    Example("/tasks/{scheduled}/revoke", "POST"),
    Example("/tasks/{scheduled}/revoke", "POST", token=True),
    Example("/tasks/tests.workerapp.add/execute", "POST", token=True,
            body='{"args": [2, 3]}'),
    Example("/cache/invalidate?cache_name=nope", "POST", token=True),
    Example("/cache/invalidate?cache_name=task_status", "POST", token=True),
)


@dataclass
class Cluster:
    """The running example: the API's port and the ids of the tasks the examples name."""

    port: int
    ids: dict[str, str]
    #: The queue the workers are named after (README's scene uses ``README_QUEUE``).
    queue: str

    def ask(self, example: Example) -> tuple[int, str]:
        """(status, body text) of ``example``; an HTTP error status is an answer too."""
        headers = {"Authorization": f"Bearer {TOKEN}"} if example.token else {}
        if example.body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{PREFIX}{example.path.format(**self.ids)}",
            data=None if example.body is None else example.body.encode(),
            headers=headers, method=example.method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode()


@contextmanager
def running_cluster(tmp: Path, queue: str) -> Iterator[Cluster]:
    """Two workers on ``queue``, the API in front of them, and the tasks the examples show."""
    broker = broker_url("redis", db=12)
    orphan = f"{queue}-reports"
    token_file = tmp / "api.token"
    token_file.write_text(TOKEN + "\n")
    client = Celery("readme", broker=broker, set_as_current=False)
    client.conf.control_exchange = queue
    server = ServeProcess(broker, queue, tmp / "serve.log", "--token-file", str(token_file),
                          "--execute-allow", "tests.workerapp.add", "--queue", orphan)
    workers = answering_workers(broker, queue, pool="prefork", stop_signal=signal.SIGQUIT)
    try:
        next(workers)
        server.start()
        stamp_publish_times(True)  # so the queues show their oldest message's age
        for x in range(3):
            client.send_task("tests.workerapp.add", (x, 1), queue=queue)
        client.send_task("tests.workerapp.boom", queue=queue)
        client.send_task("tests.workerapp.add", (1, 1), queue=orphan)
        active = client.send_task("tests.workerapp.sleep", (60,), queue=queue).id
        scheduled = client.send_task("tests.workerapp.add", (4, 4), queue=queue,
                                     countdown=600).id
        stamp_publish_times(False)
        cluster = Cluster(server.port, {"active": active, "scheduled": scheduled}, queue)
        wait_until(lambda: _settled(cluster), 30, "the workers to hold the tasks")
        yield cluster
    finally:
        if server.process is not None:
            end_process(server.process, timeout=10)
        workers.close()
        with client.connection_for_write() as connection:
            connection.default_channel.client.delete(
                *connection.default_channel.client.keys(f"{queue}*") or [queue])
        client.close()


def _settled(cluster: Cluster) -> bool:
    """One task running, one scheduled, four finished: what the examples describe."""
    _, text = cluster.ask(Example("/tasks/status?use_cache=false"))
    summary = json.loads(text)["summary"]
    _, history = cluster.ask(Example("/tasks?use_cache=false"))
    return (summary["active"], summary["scheduled"], len(json.loads(history)["tasks"])) == (
        1, 1, 4)


# --- README's text: made from answers, read back into shapes ------------------------------


def shorten(data: Any, elide: tuple[str, ...]) -> str:
    """Compact JSON as the server sends it (keys sorted), lists cut to their first item."""
    def cut(value: Any, top: bool) -> Any:
        if isinstance(value, dict):
            return {key: ELIDED if top and key in elide else cut(item, False)
                    for key, item in sorted(value.items())}
        if isinstance(value, list):
            return [cut(item, False) for item in value[:1]] + (["..."] if len(value) > 1 else [])
        return value

    text = json.dumps(cut(data, True), separators=(",", ":"))
    return text.replace(f'"{ELIDED}"', ELIDED).replace(',"..."]', ",...]")


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` folded after commas outside strings, so joining the lines gives it back."""
    lines, start, last_break, in_string, escaped = [], 0, None, False, False
    for index, char in enumerate(text):
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (
                escaped or char != '"')
            continue
        if char == '"':
            in_string = True
        elif char == ",":
            last_break = index + 1
        if index - start >= width and last_break is not None and last_break > start:
            lines.append(text[start:last_break])
            start, last_break = last_break, None
    lines.append(text[start:])
    return lines


def render(example: Example, status: int, text: str) -> list[str]:
    """The console lines of one example: the command, then the answer."""
    method = "" if example.method == "GET" else f"-X {example.method} "
    token = '-H "Authorization: Bearer $TOKEN" ' if example.token else ""
    body = f"-d '{example.body}' " if example.body else ""
    path = example.path.format(**SHELL_IDS)
    command = f"$ curl -s {method}{token}{body}{HOST}{PREFIX}{path}"
    if example.path == "/metrics":
        shown = [line for line in text.splitlines()
                 if line.split("{")[0].split(" ")[0] in METRIC_FAMILIES]
        return [command + " | grep -E '^celery_(workers|queue|observe_api_(workers|broker))'",
                *shown]
    answer = wrap(shorten(json.loads(text), example.elide))
    return [command, *answer, *([] if status == 200 else [f"# HTTP {status}"])]


def readme_block() -> list[tuple[str, list[str]]]:
    """(command, answer lines) of each example in README, in order (a status other than 200
    is the last line, ``# HTTP 404``)."""
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    found: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ curl"):
            found.append((line, []))
        elif found and line and not line.startswith("```"):
            found[-1][1].append(line)
    return found


def shape(text: str) -> Any:
    """The keys of README's (shortened) JSON, nested; ``{...}`` and scalars match anything."""
    data = json.loads(text.replace(ELIDED, "null").replace(",...]", "]"))

    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: keys(item) for key, item in value.items()}
        if isinstance(value, list):
            return [keys(value[0])] if value else []
        return None

    return keys(data)


#: A field's name; a dict with other keys maps names (workers, tasks, queues) to entries.
FIELD = re.compile(r"[a-z_][a-z0-9_]*")


def matches(shown: Any, real: Any) -> bool:
    """README's ``shown`` keys are the answer's, at every level README shows; in a map by
    worker, task or queue name, every entry has the shape README shows for its entries."""
    if shown is None:
        return True
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return False
        if not all(FIELD.fullmatch(key) for key in shown):
            return all(matches(item, entry) for item in shown.values()
                       for entry in real.values())
        return shown.keys() == real.keys() and all(
            matches(item, real[key]) for key, item in shown.items())
    if isinstance(shown, list):
        return isinstance(real, list) and (not shown or not real or matches(shown[0], real[0]))
    return True


def example_name(example: Example) -> str:
    return f"{example.method} {example.path}"


def main() -> None:
    """Run every example and write the answers into README between the markers."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), README_QUEUE) as cluster:
        lines = ["```console", "$ TOKEN=$(cat api.token)"]
        for example in EXAMPLES:
            lines += [*render(example, *cluster.ask(example)), ""]
        lines[-1] = "```"
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])
    print(f"wrote {len(EXAMPLES)} examples into {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
