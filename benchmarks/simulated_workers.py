# mypy: disallow-untyped-calls=False
# (kombu's pidbox, transports and serializers are untyped)
"""Figure 8's simulated cluster: one process answering remote control as many workers.

    python -m benchmarks.simulated_workers REPLIES_JSON FIRST COUNT

(or :func:`simulated`, which starts such processes, tracked for ``reap_all``). The broker
and the remote-control namespace come from the environment, as for the benchmark app's
workers (:func:`benchmarks.common.bench_env`). Under the hostnames
``sim<FIRST>.<namespace>@localhost`` to ``sim<FIRST + COUNT - 1>...`` it answers the
commands whose replies ``REPLIES_JSON`` holds (``{"hostname": H0, "queue": Q0,
"replies": {command: reply}}``, captured from a real observed worker: ``H0`` in them
becomes each hostname, ``Q0`` the namespace, which names the queue too), ``ping``, and
any other command with kombu's error reply, as a worker does.

To a client it looks like that many workers, broker by broker:

- RabbitMQ: every hostname has its own queue ``H.<namespace>.pidbox``, declared as a
  worker's pidbox declares it (kombu's ``Mailbox.get_queue``: exclusive, auto-delete,
  bound to the fanout exchange ``<namespace>.pidbox``), all consumed on one channel.
- Redis: kombu's transport publishes a broadcast with ``PUBLISH`` and a client may stop
  after as many replies as ``PUBLISH`` counted subscribers, so every hostname is a Redis
  connection of its own, subscribed (``PSUBSCRIBE``) to the topic kombu's ``_subscribe``
  uses, all read by one selector loop. (The pidbox queues' binding-table entries a real worker
  keeps are not written: no publisher reads them for a fanout exchange.)

Each reply goes out as a worker sends it, through kombu's ``Node.dispatch`` and
``Mailbox._publish_reply`` on a connection of its own (a worker's goes through Celery's
producer pool): ``{hostname: reply}`` to the ``reply_to`` exchange and routing key, with
the ``ticket`` and ``clock`` headers; on Redis kombu's direct-exchange lookup in
``_kombu.binding.<exchange>`` (read once per broadcast here, see :class:`_BindingTables`),
then ``LPUSH`` of the kombu message, in pipelines of :data:`REPLY_BATCH` (kombu's
``Producer.batch``). A broadcast's bytes are decoded once per process, not once per
hostname. Prints :data:`READY` once every hostname listens; ends on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import psutil
from kombu.connection import Connection
from kombu.messaging import Producer
from kombu.pidbox import Mailbox, Node
from kombu.serialization import prepare_accept_content
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from benchmarks.appenv import BROKER_ENV, QUEUE_ENV
from benchmarks.common import REPO, bench_env, client_app
from celery_observe.testing import end_process, spawn, wait_until

READY = "simulated workers ready:"
#: Replies per Redis pipeline: small enough that the client decodes while more come.
REPLY_BATCH = 50
#: Longest wait for broker traffic before looking at the stop flag again.
TICK = 0.2


def hostname(index: int, namespace: str) -> str:
    """The name of simulated worker number ``index`` (figure 8 asks for it by name)."""
    return f"sim{index:04d}.{namespace}@localhost"


def _swap(value: Any, old: str, new: str) -> Any:
    """``value`` with the string ``old`` replaced by ``new`` wherever it occurs."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {_swap(key, old, new): _swap(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_swap(item, old, new) for item in value]
    return value


class SimulatedNode(Node):
    """kombu's pidbox node for one hostname, replying through a shared producer."""

    def __init__(self, name: str, mailbox: Mailbox, replies: dict[str, Any],
                 producer: Producer, channel: Any = None) -> None:
        handlers = {command: _answer(reply) for command, reply in replies.items()}
        handlers.setdefault("ping", _answer({"ok": "pong"}))
        super().__init__(name, state=None, channel=channel, handlers=handlers,
                         mailbox=mailbox)
        self.box: Any = mailbox
        self.producer = producer

    def reply(self, data: Any, exchange: str, routing_key: str, ticket: str,
              **_kwargs: Any) -> None:
        # Node.reply, but on the shared (on Redis: batching) producer.
        self.box._publish_reply(data, exchange, routing_key, ticket,
                                channel=self.producer.channel, producer=self.producer,
                                serializer=self.box.serializer)


def _answer(reply: Any) -> Any:
    def handler(_state: Any, **_arguments: Any) -> Any:
        return reply
    return handler


class Simulator:
    """The nodes of ``hostnames`` on ``connection``, answering until :meth:`stop`."""

    def __init__(self, connection: Connection, mailbox: Mailbox, template: dict[str, Any],
                 hostnames: list[str]) -> None:
        self.connection, self.hostnames = connection, hostnames
        self.mailbox: Any = mailbox
        self.template = template
        self.stopping = False
        self.broadcasts = 0

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.stopping = True

    def nodes(self, producer: Producer, channel: Any = None) -> dict[str, SimulatedNode]:
        namespace = self.mailbox.namespace
        replies = _swap(self.template["replies"], self.template["queue"], namespace)
        original = _swap(self.template["hostname"], self.template["queue"], namespace)
        return {name: SimulatedNode(name, self.mailbox, _swap(replies, original, name),
                                    producer, channel)
                for name in self.hostnames}

    def serve_amqp(self, replying: Connection) -> None:
        consuming = self.connection.channel()
        # Replies on a connection of their own, as a worker's go through Celery's producer
        # pool: a declare's wait there does not dispatch the next broadcast's deliveries.
        producer = Producer(replying.default_channel, auto_declare=False)
        nodes = self.nodes(producer, consuming)
        consumers = [node.listen(channel=consuming) for node in nodes.values()]
        print(f"{READY} {len(consumers)}", flush=True)
        while not self.stopping:
            try:
                self.connection.drain_events(timeout=TICK)
            except TimeoutError:
                continue

    def serve_redis(self, replying: Connection) -> None:
        import redis

        channel: Any = self.connection.default_channel
        producer = Producer(replying.default_channel, auto_declare=False)
        tables = _BindingTables(producer.channel)
        nodes = self.nodes(producer)
        channel.client  # noqa: B018 - builds the pool, which sets keyprefix_fanout's db
        # A pidbox queue is bound with routing key "": _subscribe's topic for it.
        topics = channel._get_publish_topics(self.mailbox.exchange.name, "")
        pool = redis.ConnectionPool(**{**channel._connparams(),  # kombu's socket settings
                                       "max_connections": len(self.hostnames)})
        selector = selectors.DefaultSelector()
        subscribers = []
        for name in self.hostnames:
            pubsub = redis.Redis(connection_pool=pool).pubsub()
            pubsub.psubscribe(*topics)
            subscribers.append(pubsub)
            selector.register(pubsub.connection._sock, selectors.EVENT_READ, (name, pubsub))
        for pubsub in subscribers:  # every PSUBSCRIBE confirmed: all are counted now
            while pubsub.get_message(timeout=5.0) is None:
                pass
        print(f"{READY} {len(subscribers)}", flush=True)
        decoded: tuple[bytes, Any, Any] | None = None
        try:
            while not self.stopping:
                events = selector.select(TICK)
                if not events:
                    continue
                with producer.batch(max_size=REPLY_BATCH):
                    for key, _mask in events:
                        name, pubsub = key.data
                        while pubsub.connection.can_read(timeout=0):
                            event = pubsub.get_message(ignore_subscribe_messages=True)
                            if event is None or event["type"] != "pmessage":
                                continue
                            data = event["data"]
                            if decoded is None or decoded[0] != data:
                                decoded = (data, *self._decode(channel, data))
                                tables.forget()
                                self.broadcasts += 1
                            nodes[name].handle_message(decoded[1], decoded[2])
        finally:
            selector.close()
            for pubsub in subscribers:
                pubsub.close()
            pool.disconnect()

    def _decode(self, channel: Any, data: bytes) -> tuple[Any, Any]:
        """(body, message) of one broadcast, as the transport's consumer decodes it."""
        message = channel.Message(loads(bytes_to_str(data)), channel=channel)
        message.accept = prepare_accept_content(self.mailbox.accept)  # as Consumer does
        return message.decode(), message


class _BindingTables:
    """A Redis channel's ``get_table`` read once per broadcast, not once per reply.

    kombu reads ``_kombu.binding.<exchange>`` (a new Redis client and a SMEMBERS) for
    every message it routes through a direct exchange: 1,000 times per broadcast here,
    for the same reply queue. Each reply is still routed by kombu and pushed where a
    worker's would go; the simulator just spends less of the CPU the client needs.
    """

    def __init__(self, channel: Any) -> None:
        self._read = channel.get_table
        self._tables: dict[str, Any] = {}
        channel.get_table = self.get

    def get(self, exchange: str) -> Any:
        if exchange not in self._tables:
            self._tables[exchange] = self._read(exchange)
        return self._tables[exchange]

    def forget(self) -> None:
        self._tables.clear()


@contextlib.contextmanager
def simulated(broker: str, namespace: str, template: dict[str, Any], hostnames: int,
              processes: int = 1, timeout: float = 120.0) -> Iterator[list[psutil.Process]]:
    """``hostnames`` simulated workers on ``broker`` in ``processes`` processes (tracked for
    ``reap_all``), listening; yields the processes, and ends them on the way out."""
    handle, name = tempfile.mkstemp(prefix="observe-bench-simulated-", suffix=".json")
    os.close(handle)
    replies = Path(name)
    replies.write_text(json.dumps(template))
    share = -(-hostnames // processes)
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def listening() -> bool:
        for process, log_path in started:
            if process.poll() is not None:
                raise RuntimeError(f"a simulator exited with {process.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
        return all(READY in log_path.read_text(errors="replace") for _p, log_path in started)

    try:
        for first in range(0, hostnames, share):
            log_path = replies.with_name(f"{replies.stem}-{first}.log")
            started.append((spawn([sys.executable, "-m", "benchmarks.simulated_workers",
                                   str(replies), str(first), str(min(share, hostnames - first))],
                                  log_path, bench_env(broker, namespace, 0), REPO,
                                  remove_log=True), log_path))
        wait_until(listening, timeout, f"{hostnames} simulated workers to listen")
        yield [psutil.Process(process.pid) for process, _log in started]
    finally:
        for process, _log in started:
            end_process(process)
        replies.unlink()


def main(argv: list[str]) -> int:
    replies_path, first, count = argv[0], int(argv[1]), int(argv[2])
    namespace = os.environ[QUEUE_ENV]
    app = client_app(os.environ[BROKER_ENV], namespace)
    template = json.loads(Path(replies_path).read_text())
    hostnames = [hostname(index, namespace) for index in range(first, first + count)]
    connection, replying = app.connection_for_write(), app.connection_for_write()
    simulator = Simulator(connection, app.control.mailbox(connection), template, hostnames)
    signal.signal(signal.SIGTERM, simulator.stop)
    signal.signal(signal.SIGINT, simulator.stop)
    try:
        connection.connect()
        if connection.transport.driver_type == "redis":
            simulator.serve_redis(replying)
        else:
            simulator.serve_amqp(replying)
    finally:
        replying.release()
        connection.release()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
