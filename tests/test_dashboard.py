"""The live dashboard as a person uses it: headless Chromium, the API, real workers on Redis.

The browser is Debian's chromium (/usr/bin/chromium) driven by Python's playwright, which
downloads no browser of its own here. Without either, the browser tests skip with the
reason, unless CELERY_OBSERVE_REQUIRE_BROKERS=1 (as on CI), where they fail instead.
The API runs on uvicorn in a thread (so a test can stop and restart it on its port, and
set a one-second frame interval); one test runs `celery observe serve` as a process.
A 1280x800 screenshot is written to CELERY_OBSERVE_ARTEFACT_DIR (a temporary folder
otherwise); README's docs/dashboard.png is that screenshot.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import struct
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from celery_observe.cluster.api import ApiSettings, create_app
from celery_observe.cluster.api.dashboard import ASSET_TYPES, FinishedSeries
from celery_observe.cluster.api.events import end_streams
from celery_observe.testing import free_port, wait_until

from .conftest import answering_workers, broker_url
from .test_serve import ServeProcess
from .workers import WorkerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PREFIX = "/api/v1/celery"
TOKEN = "dashboard-test-token-0123456789"
#: Seconds between the page's frames in these tests (5 by default).
INTERVAL = 1.0
#: How long the screenshot test feeds the charts; longer for README's picture.
SCREENSHOT_SECONDS = float(os.environ.get("CELERY_OBSERVE_SCREENSHOT_SECONDS", "4"))


def required(reason: str) -> None:
    """Skip with ``reason``, or fail where CI requires every test to run."""
    if os.environ.get("CELERY_OBSERVE_REQUIRE_BROKERS") == "1":
        pytest.fail(f"{reason}, and CELERY_OBSERVE_REQUIRE_BROKERS=1 forbids skipping")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, launched once for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        required("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        required(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab at 1280x800 that keeps its console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.tab = self.context.new_page()
        self.errors: list[str] = []
        self.tab.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.tab.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, url: str) -> Page:
        self.tab.goto(url)
        self.wait_frames(1)
        return self

    def frames(self) -> int:
        return int(self.tab.locator("#main").get_attribute("data-frames") or 0)

    def wait_frames(self, count: int, timeout: float = 20) -> None:
        wait_until(lambda: self.frames() >= count, timeout, f"{count} frames on the page")

    def text(self, selector: str) -> str:
        return str(self.tab.locator(selector).inner_text()).strip()

    def table(self, body: str) -> dict[str, list[str]]:
        """Each row of a table body by its key: the text of its cells."""
        rows = self.tab.locator(f"#{body} tr")
        return {rows.nth(n).get_attribute("data-key"): [
            text.strip() for text in rows.nth(n).locator("td").all_inner_texts()]
            for n in range(rows.count())}

    def has_row(self, body: str, key: str) -> bool:
        return bool(self.tab.locator(f'#{body} tr[data-key="{key}"]').count())


class ApiServer:
    """``create_app`` on uvicorn in a thread, on a port it keeps when restarted."""

    def __init__(self, client: Celery, **settings: Any) -> None:
        self.client = client
        self.settings = ApiSettings(timeout=5, discovery_timeout=1, events_interval=INTERVAL,
                                    token=TOKEN, **settings)
        self.port = free_port()
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> ApiServer:
        import uvicorn

        config = uvicorn.Config(create_app(self.client, self.settings), host="127.0.0.1",
                                port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard-test-api",
                                       daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the API to start")
        return self

    def stop(self) -> None:
        """Stop as `observe serve` does on SIGTERM: end the event streams, then the server."""
        if self.thread is not None:
            end_streams()
            self.server.should_exit = True
            self.thread.join(20)
            assert not self.thread.is_alive(), "the API did not stop"
            self.thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}/"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def redis() -> str:
    """Broker and result backend, in a Redis database of this module's own."""
    return broker_url("redis", db=10)


@pytest.fixture(scope="module")
def queue_name() -> str:
    """The module's queue (its workers are shared by its tests: they take seconds to start)."""
    return f"dash-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def producer(redis: str, queue_name: str) -> Iterator[Celery]:
    """The app that sends the tests' tasks and that the API serves; cleans its queues up."""
    app = Celery("dashboard", broker=redis, backend=redis, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, control_exchange=queue_name,
                    task_default_queue=queue_name)
    yield app
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        client.delete(*client.keys(f"{queue_name}*") or [queue_name])
    app.close()


@pytest.fixture(scope="module")
def workers(redis: str, queue_name: str) -> Iterator[list[WorkerProcess]]:
    """Two observed threads workers (2 slots each) on the module's queue, with the backend."""
    yield from answering_workers(redis, queue_name, env={"CELERY_OBSERVE_TEST_BACKEND": redis})


@pytest.fixture
def api(producer: Celery, queue_name: str) -> Iterator[ApiServer]:
    """The API, reporting a queue no worker consumes too; stopped afterwards."""
    server = ApiServer(producer, queues=(f"{queue_name}-idle",)).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    tab = Page(browser)
    yield tab
    tab.context.close()


def counts(api: ApiServer) -> dict[str, int]:
    """Successes and failures over the workers, as the API's /status reports them."""
    stats = api.get("status?use_cache=false")["worker_stats"].values()
    return {key: sum(worker["counts"][key] for worker in stats) for key in ("success", "failure")}


def seconds(text: str) -> float:
    """The page's "4.2 s" or "12 s" as a number."""
    match = re.fullmatch(r"([\d.]+) s", text)
    assert match, text
    return float(match[1])


@pytest.mark.broker
def test_the_page_shows_what_the_api_answers(
        page: Page, api: ApiServer, producer: Celery, queue_name: str,
        workers: list[WorkerProcess]) -> None:
    """No console error; workers, active, waiting, queue depths and per-worker counts are
    the API's at the same moment."""
    before = counts(api)
    for n in range(3):
        producer.send_task("tests.workerapp.add", (n, n))
    producer.send_task("tests.workerapp.boom")
    wait_until(lambda: counts(api) == {"success": before["success"] + 3,
                                       "failure": before["failure"] + 1}, 20, "4 tasks finished")
    idle = f"{queue_name}-idle"
    idle_before = api.get("queues/status?use_cache=false")["queues"][idle]["length"]
    scheduled = api.get("tasks/status?use_cache=false")["summary"]["scheduled"] + 1
    for _ in range(2):
        producer.send_task("tests.workerapp.add", (1, 1), queue=idle)
    producer.send_task("tests.workerapp.sleep", (5,))
    producer.send_task("tests.workerapp.add", (2, 2), countdown=60)
    page.open(api.url)
    wait_until(lambda: (page.text("#figure-active"), page.text("#figure-scheduled")) == (
        "1", str(scheduled)), 10, f"the page to show 1 active and {scheduled} scheduled tasks")

    shown = {name: page.text(f"#figure-{name}")
             for name in ("workers", "missing", "active", "reserved", "scheduled", "queued")}
    queues_shown = {name: cells[1] for name, cells in page.table("queues-rows").items()}
    workers_shown = page.table("workers-rows")
    listed = api.get("workers/status?use_cache=false")
    pending = api.get("tasks/status?use_cache=false")["summary"]
    queues = api.get("queues/status?use_cache=false")["queues"]
    stats = api.get("status?use_cache=false")["worker_stats"]

    assert shown == {"workers": str(listed["online_workers"]), "missing": "0",
                     "active": str(pending["active"]), "reserved": str(pending["reserved"]),
                     "scheduled": str(pending["scheduled"]),
                     "queued": str(sum(q["length"] for q in queues.values()))}
    assert (listed["online_workers"], pending["active"], pending["scheduled"]) == (
        2, 1, scheduled)
    assert queues_shown == {name: str(q["length"]) for name, q in queues.items()}
    assert (queues[queue_name]["length"], queues[idle]["length"]) == (0, idle_before + 2)
    assert page.table("queues-rows")[idle][4] == "no consumer"
    assert {name: (cells[5], cells[6]) for name, cells in workers_shown.items()} == {
        name: (str(worker["counts"]["success"]), str(worker["counts"]["failure"]))
        for name, worker in stats.items()}
    assert sorted(workers_shown) == sorted(worker.hostname for worker in workers)
    assert page.errors == []


@pytest.mark.broker
def test_a_task_started_later_shows_as_active_within_one_update_then_in_history(
        page: Page, api: ApiServer, producer: Celery, workers: list[WorkerProcess]) -> None:
    """A task sent after the page opened is active within two intervals, its runtime
    grows, and it is in the history within two intervals of its end."""
    page.open(api.url)
    sent = producer.send_task("tests.workerapp.sleep", (2.5,))
    started = time.monotonic()
    wait_until(lambda: page.has_row("active-rows", sent.id), 2 * INTERVAL + 1, "the active row")
    assert time.monotonic() - started <= 2 * INTERVAL + 1
    runtime = seconds(page.table("active-rows")[sent.id][3])
    time.sleep(1.1)  # the page ticks each second
    assert seconds(page.table("active-rows")[sent.id][3]) > runtime
    sent.get(timeout=10)
    ended = time.monotonic()
    row = page.tab.locator(f'#history-rows tr[data-key^="{sent.id}:"]')
    wait_until(lambda: row.count() == 1, 2 * INTERVAL + 1, "the history row")
    assert time.monotonic() - ended <= 2 * INTERVAL + 1
    assert row.locator("td").nth(3).inner_text() == "success"
    assert not page.has_row("active-rows", sent.id)
    assert page.errors == []


@pytest.mark.broker
def test_revoking_a_waiting_task_from_the_page_revokes_it(
        page: Page, api: ApiServer, producer: Celery, workers: list[WorkerProcess]) -> None:
    """Revoke on a scheduled task asks for the token, sends it; the worker discards the
    task at its ETA and reports it revoked, never run."""
    page.open(api.url)
    waiting = producer.send_task("tests.workerapp.add", (1, 1), countdown=6)
    wait_until(lambda: page.has_row("waiting-rows", waiting.id), 10, "the waiting row")
    page.tab.get_by_role("button", name=f"Revoke task {waiting.id}").click()
    assert page.tab.locator("#confirm").is_visible()
    assert page.text("#confirm-title") == "Revoke task?"
    page.tab.locator("#token-input").fill(TOKEN)
    page.tab.locator("#confirm-ok").click()
    wait_until(lambda: page.text("#notice") == f"Revoked task {waiting.id}.", 10, "the notice")

    def reported() -> list[str]:
        return [t["state"] for t in api.get(f"tasks?id_prefix={waiting.id}")["tasks"]]

    assert wait_until(reported, 20, "the task's history entry") == ["revoked"]
    assert api.get(f"tasks/{waiting.id}/status")["state"] == "REVOKED"
    assert waiting.state == "REVOKED"
    assert not [e for e in page.errors if TOKEN in e] and page.errors == []


@pytest.mark.broker
def test_with_the_api_restarted_the_page_shows_stale_then_recovers(
        page: Page, api: ApiServer, workers: list[WorkerProcess]) -> None:
    """The API stops: "Stale since HH:MM:SS"; it starts again: fresh frames, no banner."""
    page.open(api.url)
    api.stop()
    banner = page.tab.locator("#stale")
    wait_until(banner.is_visible, 10, "the stale banner")
    assert re.match(r"Stale since \d\d:\d\d:\d\d: ", banner.inner_text())
    assert "stale" in (page.tab.locator("body").get_attribute("class") or "")
    before = page.frames()
    api.start()
    wait_until(banner.is_hidden, 20, "the banner to go")
    assert page.frames() > before
    assert page.text("#figure-workers") == "2"


@pytest.mark.broker
def test_a_screenshot_at_1280x800_is_written(
        page: Page, api: ApiServer, producer: Celery, queue_name: str,
        workers: list[WorkerProcess], tmp_path: Path) -> None:
    """A busy cluster's page as a 1280x800 PNG, in the artefact folder."""
    page.open(api.url)
    producer.send_task("tests.workerapp.add", (1, 2), queue=f"{queue_name}-idle")
    producer.send_task("tests.workerapp.sleep", (4,))
    producer.send_task("tests.workerapp.add", (3, 4), countdown=120)
    deadline = time.monotonic() + SCREENSHOT_SECONDS
    while time.monotonic() < deadline:  # a steady load: tasks succeed, some fail
        for n in range(5):
            producer.send_task("tests.workerapp.add", (n, n))
        producer.send_task("tests.workerapp.boom")
        time.sleep(0.5)
    producer.send_task("tests.workerapp.sleep", (3,))
    page.wait_frames(page.frames() + 2)
    folder = Path(os.environ.get("CELERY_OBSERVE_ARTEFACT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dashboard.png"
    page.tab.screenshot(path=str(path))
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 800)
    assert page.errors == []


@pytest.mark.broker
def test_frames_reuse_the_pages_nodes(page: Page, api: ApiServer, producer: Celery,
                                      workers: list[WorkerProcess]) -> None:
    """Ten frames later the page holds as many DOM nodes as before: rows are reused."""
    for n in range(25):  # a full history (the frame carries 20) that stays full
        producer.send_task("tests.workerapp.add", (n, n))
    page.open(api.url)
    wait_until(lambda: len(page.table("history-rows")) == 20, 20, "20 history rows")
    page.wait_frames(page.frames() + 1)
    nodes = page.tab.evaluate("() => document.getElementsByTagName('*').length")
    page.wait_frames(page.frames() + 10)
    assert page.tab.evaluate("() => document.getElementsByTagName('*').length") == nodes


@pytest.mark.broker
def test_at_phone_width_the_page_is_one_column(
        browser: Any, api: ApiServer, workers: list[WorkerProcess]) -> None:
    """At 390 px every section starts at the same left edge and nothing scrolls sideways."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        tab = context.new_page()
        tab.goto(api.url)
        tab.wait_for_selector('#main:not([data-frames="0"])', state="attached")
        lefts = tab.evaluate(
            "() => [...document.querySelectorAll('main > section')]"
            ".map((s) => Math.round(s.getBoundingClientRect().left))")
        assert len(lefts) == 7 and len(set(lefts)) == 1
        assert tab.evaluate("() => document.documentElement.scrollWidth") == 390
    finally:
        context.close()


@pytest.mark.broker
def test_observe_serve_sends_root_to_the_page_and_stops_at_once_with_it_open(
        page: Page, workers: list[WorkerProcess], redis: str, queue_name: str,
        tmp_path: Path) -> None:
    """`observe serve`: GET / redirects to the prefix's page, which goes live; SIGTERM with
    the page open exits 0 within 5 s (not after the 10 s grace)."""
    server = ServeProcess(redis, queue_name, tmp_path / "serve.log").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/")
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("location")) == (307, f"{PREFIX}/")
        connection.close()
        page.open(f"http://127.0.0.1:{server.port}/")
        assert page.tab.url == f"http://127.0.0.1:{server.port}{PREFIX}/"
        assert page.text("#figure-workers") == "2"
        started = time.monotonic()
        assert server.terminate(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
    assert page.errors == []


def test_the_page_and_its_files_use_relative_urls_only() -> None:
    """Every file links and fetches relative to the page, so any prefix or proxy works."""
    folder = Path(__file__).resolve().parent.parent / "celery_observe/cluster/dashboard"
    assert sorted(path.name for path in folder.iterdir()) == sorted(ASSET_TYPES)
    for name in ASSET_TYPES:
        text = (folder / name).read_text()
        assert not re.findall(r"""(?:src|href)=["']/|fetch\(["'`]/|EventSource\(["'`]/""",
                              text), name
        # Absolute URLs are the SVG namespace and the workers' own /metrics links only.
        assert re.findall(r"https?://(?!www\.w3\.org/2000/svg|\$\{)", text) == [], name


def test_the_page_is_served_with_its_policy_and_revalidated() -> None:
    """GET / is the page with a Content-Security-Policy; assets answer 304 to their ETag;
    an unknown file is a 404."""
    app = Celery("page", broker="memory://", set_as_current=False)
    with TestClient(create_app(app)) as http:
        page = http.get(f"{PREFIX}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script type="module" src="dashboard/dashboard.js">' in page.text
        script = http.get(f"{PREFIX}/dashboard/dashboard.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        again = http.get(f"{PREFIX}/dashboard/dashboard.js",
                         headers={"If-None-Match": script.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")
        assert http.get(f"{PREFIX}/dashboard/secrets.txt").status_code == 404
        assert http.get(f"{PREFIX}/dashboard/index.html").status_code == 404


def test_finished_series_counts_what_finished_between_frames() -> None:
    """Differences of each worker's counts; a new worker adds nothing, a restarted one
    (new pid, or fewer counts) adds all of its counts."""
    series = FinishedSeries(interval=5)
    series.add(100.0, {"w1": {"pid": 1, "counts": {"success": 5}}}, [])
    series.add(105.0, {"w1": {"pid": 1, "counts": {"success": 8, "failure": 1}}}, [])
    series.add(110.0, {"w1": {"pid": 1, "counts": {"success": 9, "failure": 1}},
                       "w2": {"pid": 2, "counts": {"success": 100}}}, [])
    series.add(115.0, {"w1": {"pid": 3, "counts": {"success": 2}},
                       "w2": {"pid": 2, "counts": {"success": 101, "revoked": 1}}}, [])
    assert list(series.points) == [[105.0, 3, 1, 0, 0, 0], [110.0, 1, 0, 0, 0, 0],
                                   [115.0, 3, 0, 0, 1, 0]]


def test_finished_series_is_bounded_and_restarts_after_a_gap() -> None:
    """15 minutes of points at most (181 at 5 s); after a gap of more than three intervals
    the next frame only starts the differences again."""
    series = FinishedSeries(interval=5)
    for n in range(500):
        series.add(5.0 * n, {"w1": {"pid": 1, "counts": {"success": n}}}, [])
    assert len(series.points) == 181
    series.add(5.0 * 499 + 16, {"w1": {"pid": 1, "counts": {"success": 900}}}, [])
    assert series.points[-1][0] == 5.0 * 499
    series.add(5.0 * 499 + 21, {"w1": {"pid": 1, "counts": {"success": 901}}}, [])
    assert series.points[-1] == [5.0 * 499 + 21, 1, 0, 0, 0, 0]


def test_a_worker_missing_for_a_frame_keeps_its_counts() -> None:
    """A worker silent for one frame is counted from its last counts when it answers."""
    series = FinishedSeries(interval=5)
    series.add(0.0, {"w1": {"pid": 1, "counts": {"success": 1}}}, [])
    series.add(5.0, {}, ["w1"])
    series.add(10.0, {"w1": {"pid": 1, "counts": {"success": 4}}}, [])
    assert list(series.points) == [[5.0, 0, 0, 0, 0, 0], [10.0, 3, 0, 0, 0, 0]]
