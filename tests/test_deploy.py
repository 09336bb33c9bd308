"""deploy/ as shipped: promtool accepts the rules and their unit tests pass, a real Prometheus
scraping a real worker returns data for every rule, panel and autoscaler query, and the
Kubernetes manifests pass the schemas and use the plugin's ports, paths and names."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes_validate
import pytest
import yaml
from celery import Celery

from celery_observe import stamp_publish_times
from celery_observe.cluster.cli import serve as serve_command
from celery_observe.config import DEFAULT_PORT
from celery_observe.testing import wait_until
from celery_observe.worker.routes import INLINE_PATHS

from .conftest import broker_url
from .prometheus_server import Prometheus, debian_binary, serving
from .test_api import PREFIX, api_app
from .workers import REPO, WorkerProcess

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "celery-observe.json"
KUBERNETES = DEPLOY / "kubernetes"
T = "tests.workerapp."
#: Kinds that kubernetes-validate has no schema for (custom resources).
CUSTOM_KINDS = {"PodMonitor", "ServiceMonitor", "ScrapeConfig", "ScaledObject"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([debian_binary("promtool"), *args], cwd=RULES.parent,
                          capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules_and_the_prometheus_config() -> None:
    """`promtool check rules` passes, and `check config` finds the rules beside the config."""
    rules = promtool("check", "rules", RULES.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 13 rules found" in config.stdout


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires on the series meant to fire it, only there."""
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a unit test time where it fires and one where it does not."""
    seen: dict[str, set[bool]] = {}
    for case in yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]:
        for check in case.get("alert_rule_test", ()):
            seen.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert seen == {name: {True, False} for name in alerts()}


# --- one real worker, the cluster API and Prometheus with deploy/prometheus as shipped ----

#: Operators by precedence, lowest first, as far as probing needs to split expressions.
SET_OPERATORS = (("or",), ("and", "unless"))
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
MODIFIERS = re.compile(r"^\s*(bool\s+)?((on|ignoring)\s*\([^)]*\)\s*)?"
                       r"((group_left|group_right)\s*(\([^)]*\))?\s*)?")
NUMBER = re.compile(r"^\s*[0-9.e+-]+\s*$")


def _split_last(expr: str, operators: tuple[str, ...]) -> tuple[str, str, str] | None:
    """``expr`` split at its last top-level ``operators`` (PromQL's are left-associative)."""
    depth, quote, found, index = 0, "", None, 0
    while index < len(expr):
        char, width = expr[index], 1
        if quote:
            quote = "" if char == quote and expr[index - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for op in operators:
                pattern = rf"(?<![\w:]){op}(?![\w:])" if op.isalpha() else re.escape(op) + "(?!=)"
                if re.compile(pattern).match(expr, index):
                    found, width = (index, op), len(op)
                    break
        index += width
    if found is None:
        return None
    at, op = found
    return expr[:at], op, expr[at + len(op):]


def _unwrap(expr: str) -> str:
    """``expr`` without parentheses around all of it."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")") and _closes_at_end(expr):
        expr = expr[1:-1].strip()
    return expr


def _closes_at_end(expr: str) -> bool:
    depth = 0
    for index, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and index < len(expr) - 1:
            return False
    return True


def probes(expr: str) -> list[str]:
    """The parts of ``expr`` that must return series when the metrics it names exist: set
    operators' operands and comparisons' sides, but not thresholds; ``absent(x)``'s x."""
    expr = _unwrap(expr)
    for operators in (*SET_OPERATORS, COMPARISONS):
        split = _split_last(expr, operators)
        if split is not None:
            left, op, right = split
            right = MODIFIERS.sub("", right, count=1)
            parts = probes(left)
            if op != "unless" and not NUMBER.match(right):  # unless: the right may be empty
                parts += probes(right)
            return parts
    absent = re.fullmatch(r"absent\((.*)\)", expr, re.DOTALL)
    return probes(absent.group(1)) if absent else [expr]


@pytest.mark.parametrize(("expr", "parts"), [
    ("x > 0.1", ["x"]),
    ("a / b > on (j) group_left () 0.9 * c", ["a / b", "0.9 * c"]),
    ("max(a) == 0 or max(b) == 0", ["max(a)", "max(b)"]),
    ('a{l=~"x|y"} > 0 and on (q) b == 0', ['a{l=~"x|y"}', "b"]),
    ("(x and on (t) y) or z", ["x", "y", "z"]),
    ("absent(up)", ["up"]),
    ("x unless x offset 10m", ["x"]),
    ("order >= 1", ["order"]),
])
def test_probes_keep_every_metric_and_drop_thresholds(expr: str, parts: list[str]) -> None:
    """Probing splits at set operators and comparisons, and leaves thresholds out."""
    assert [part.strip() for part in probes(expr)] == parts


@dataclass
class Live:
    prometheus: Prometheus
    queue: str


def _mix(client: Celery, queue: str) -> int:
    """One of each outcome the rules and panels read; returns how many outcomes follow."""
    for name, args in (("add", (1, 2)), ("boom", ()), ("flaky", ()), ("over_soft_limit", ())):
        client.send_task(T + name, args, queue=queue)
    # a label the monitored task cannot extract: an internal fault of celery-observe
    client.send_task("tests.faultingmonitoredapp.deliver", ({"region": "eu"},), queue=queue)
    return 6  # flaky is a retry, then a success


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """A prefork worker after two rounds of mixed outcomes (the first makes the series, the
    second moves them), messages waiting behind two long tasks, a message in a queue no
    one consumes, and Prometheus scraping it all with deploy/prometheus's files."""
    broker = broker_url("redis")
    queue = f"observe-deploy-{uuid.uuid4().hex[:12]}"
    orphan = f"{queue}-orphan"
    client = Celery("client", broker=broker, set_as_current=False)
    client.conf.control_exchange = queue
    worker = WorkerProcess(broker, queue, app="tests.faultingmonitoredapp",
                           extra_args=("--max-memory-per-child", "1000000"))
    config = (RULES.parent / "prometheus.yml").read_text()
    try:
        worker.start()
        with serving(api_app(client, queues=(orphan,))) as api_port:
            config = config.replace("celery-observe-api:8000", f"127.0.0.1:{api_port}")
            config = config.replace("15s", "1s").replace("30s", "1s")
            with Prometheus(config, {RULES.name: RULES.read_text()}) as prometheus:
                wait_until(lambda: prometheus.targets_up() == {
                    "celery-workers": {f"127.0.0.1:{worker.port}"},
                    "celery-observe-api": {f"127.0.0.1:{api_port}"}}, 30,
                    f"Prometheus to scrape the worker and the API\n{prometheus.log()}")
                stamp_publish_times(True)
                client.send_task(T + "add", (1, 1), queue=orphan)
                expected = 0
                for _ in range(2):
                    expected += _mix(client, queue)
                    wait_until(lambda n=expected: prometheus.query(
                        f"sum(celery_task_total) >= {n}"), 30, f"{expected} outcomes scraped")
                # Two long tasks hold both children, two more wait for them in the
                # worker (prefetched), and the last two wait in the broker.
                for name, args in [("sleep", (120,))] * 2 + [("add", (2, 2))] * 4:
                    client.send_task(T + name, args, queue=queue)
                stamp_publish_times(False)
                wait_until(lambda: prometheus.query("celery_queue_oldest_message_age_seconds"),
                           30, "a waiting message's age to be scraped")
                wait_until(lambda: prometheus.query("celery_task:last_success_timestamp_seconds"
                                                    ":max"), 30, "the recording rules to run")
                # The API's figures come through its caches (worker status 5 s, queue
                # status 3 s), so they are up to date some seconds after the worker's.
                wait_until(lambda: prometheus.query(
                    f'celery_queues_backlog{{queue="{orphan}"}} == 1'), 30,
                    "the API to see the message no one consumes")
                yield Live(prometheus, queue)
    finally:
        stamp_publish_times(False)
        worker.stop(signal.SIGQUIT)  # cold: the long tasks are not waited for
        with client.connection_for_write() as connection, contextlib.suppress(Exception):
            redis = connection.default_channel.client
            redis.delete(*redis.keys(f"{queue}*") or [queue])
        client.close()


def returns_data(prometheus: Prometheus, expr: str) -> list[str]:
    """What is wrong with ``expr``'s probes: each must return a series with a real value."""
    wrong = []
    for part in probes(expr):
        values = [float(series["value"][1]) for series in prometheus.query(part)]
        if not any(math.isfinite(value) for value in values):
            wrong.append(f"{part.strip()} -> {values or 'no series'}")
    return wrong


@pytest.mark.broker
def test_a_query_naming_no_exported_metric_is_caught(live: Live) -> None:
    """The check is not vacuous: a metric the worker does not export is reported."""
    assert returns_data(live.prometheus, "sum(celery_task_failures_total) > 0") == [
        "sum(celery_task_failures_total) -> no series"]


@pytest.mark.broker
def test_prometheus_reads_the_seed_names_as_counted(live: Live) -> None:
    """celery_tasks_total by queue holds both rounds' outcomes; the API's workers count and
    backlog see the worker and the message no one consumes."""
    def values(expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1])
                for s in live.prometheus.query(expr)}

    assert values(f'sum by (status) (celery_tasks_total{{queue="{live.queue}"}})',
                  "status") == {"success": 6, "failure": 4, "retry": 2, "revoked": 0,
                                "rejected": 0}
    assert values("celery_workers_count", "") == {"": 1}
    assert values(f'celery_queues_backlog{{queue="{live.queue}-orphan"}}', "queue") == {
        f"{live.queue}-orphan": 1}


@pytest.mark.broker
def test_every_rule_expression_returns_data_from_a_real_worker(live: Live) -> None:
    """Each recording rule and each alert's measure (threshold left out) returns series."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    wrong = {rule.get("alert") or rule["record"]: returns_data(live.prometheus, rule["expr"])
             for rule in rules}
    assert {name: parts for name, parts in wrong.items() if parts} == {}
    assert len(rules) == 13


def dashboard_queries() -> dict[str, str]:
    """Each panel target's query, with variables as Grafana sends them for 'All'."""
    def concrete(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "1m")
        return re.sub(r"\$(job|worker|task|queue)\b", ".*", expr)

    dashboard = json.loads(DASHBOARD.read_text())
    return {f"{panel['title']} [{target['refId']}]": concrete(target["expr"])
            for panel in dashboard["panels"] for target in panel.get("targets", ())}


@pytest.mark.broker
def test_every_dashboard_query_returns_data_from_a_real_worker(live: Live) -> None:
    """Every panel query of the Grafana dashboard returns a series with a real value."""
    queries = dashboard_queries()
    wrong = {title: returns_data(live.prometheus, expr) for title, expr in queries.items()}
    assert {title: parts for title, parts in wrong.items() if parts} == {}
    assert len(queries) == 24


@pytest.mark.broker
def test_every_dashboard_variable_finds_values(live: Live) -> None:
    """Each variable's label_values(metric, label) finds the label on a real series."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((.*), (\w+)\)",
                                     variable["query"]["query"]).groups()
        series = live.prometheus.query(re.sub(r"\$\w+", ".*", metric))
        found[variable["name"]] = {s["metric"].get(label) for s in series} - {None}
    assert set(found) == {"job", "worker", "task", "queue"}
    assert found["job"] == {"celery-workers"}
    assert live.queue in found["queue"]
    assert {T + "add", T + "boom", T + "flaky"} <= found["task"]


def manifests(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]


@pytest.mark.broker
def test_the_autoscaler_queries_return_data_from_a_real_worker(live: Live) -> None:
    """The ScaledObject's backlog and wait-time queries return series (for the test's queue
    in place of Celery's default queue, 'celery')."""
    (scaled,) = manifests("keda-scaledobject.yaml")
    queries = [trigger["metadata"]["query"] for trigger in scaled["spec"]["triggers"]]
    assert 'queue="celery"' in queries[0]
    queries[0] = queries[0].replace('queue="celery"', f'queue="{live.queue}"')
    assert {query: returns_data(live.prometheus, query) for query in queries} == {
        query: [] for query in queries}


# --- Kubernetes, offline ------------------------------------------------------------------

def all_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(KUBERNETES.glob("*.yaml"))
            for doc in manifests(path.name)]


def test_kubernetes_manifests_pass_the_schemas() -> None:
    """Built-in kinds pass kubernetes-validate --strict; the rest are the known CRDs."""
    kinds = []
    for name, doc in all_manifests():
        kinds.append(doc["kind"])
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["metadata"]["name"] and doc["spec"], name
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert sorted(kinds) == ["Deployment", "Deployment", "PodMonitor", "ScaledObject",
                             "ScrapeConfig", "Service", "ServiceMonitor"]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in all_manifests()
              if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return doc


def readme_probes() -> dict[str, Any]:
    """The probes of README's pod spec, which replaces `celery inspect ping` exec probes."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(livenessProbe:.*?)```", readme, re.DOTALL)
    assert block is not None, "README's Kubernetes probe block is gone"
    return dict(yaml.safe_load(block.group(1)))


def test_worker_probes_are_the_readmes_on_the_default_port() -> None:
    """The worker's probes are README's, on the port named metrics, which is DEFAULT_PORT."""
    (container,) = by_kind("Deployment", "celery-worker")["spec"]["template"]["spec"][
        "containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": DEFAULT_PORT}]
    recommended = readme_probes()
    for probe in ("livenessProbe", "readinessProbe"):
        shipped = dict(container[probe])
        assert shipped.pop("httpGet") == {**recommended[probe].pop("httpGet"), "port": "metrics"}
        assert shipped == recommended[probe]
    assert {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")} == set(
        INLINE_PATHS)
    assert "--observe" in container["command"]


def test_podmonitor_scrapes_the_worker_pods_metrics_port() -> None:
    """The PodMonitor selects the worker pods and scrapes /metrics on their metrics port."""
    worker = by_kind("Deployment", "celery-worker")
    monitor = by_kind("PodMonitor", "celery-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        ("metrics", "/metrics")]
    assert monitor["metadata"]["namespace"] == worker["metadata"]["namespace"]


def serve_default(option: str) -> Any:
    (param,) = [p for p in serve_command.params if p.name == option]
    return param.default


def test_api_manifests_and_scrape_configs_use_observe_serves_defaults() -> None:
    """Port and prefix of `observe serve` are those of the API's Deployment, Service,
    ServiceMonitor, the HTTP SD ScrapeConfig and deploy/prometheus/prometheus.yml."""
    port, prefix = serve_default("port"), serve_default("prefix")
    assert prefix == PREFIX
    deployment = by_kind("Deployment", "celery-observe-api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:5] == ["celery", "-A", "proj", "observe", "serve"]
    assert f"--port={port}" in container["command"]
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    service = by_kind("Service", "celery-observe-api")
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    monitor = by_kind("ServiceMonitor", "celery-observe-api")
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
        ("http", f"{prefix}/metrics")]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"
    scrape = by_kind("ScrapeConfig", "celery-workers")
    assert [c["url"] for c in scrape["spec"]["httpSDConfigs"]] == [
        f"http://{host}{prefix}/prometheus/targets"]
    config = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["celery-workers"]["http_sd_configs"][0]["url"] == (
        f"http://celery-observe-api:{port}{prefix}/prometheus/targets")
    assert jobs["celery-observe-api"]["metrics_path"] == f"{prefix}/metrics"


def test_the_scaled_object_scales_the_worker_deployment() -> None:
    """KEDA's ScaledObject targets the worker Deployment, on Prometheus triggers."""
    scaled = by_kind("ScaledObject", "celery-worker")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "celery-worker"}
    assert {t["type"] for t in scaled["spec"]["triggers"]} == {"prometheus"}
