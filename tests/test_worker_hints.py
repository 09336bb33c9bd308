"""The hint file a command line starts from: what it keeps, and that a bad one costs nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from celery import Celery

from celery_observe.cluster import hints
from celery_observe.cluster.hints import WorkerHints


def test_saved_hostnames_are_loaded_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "workers.json"
    WorkerHints(path).save(["b@host", "a@host"])
    assert WorkerHints(path).load() == {"a@host", "b@host"}
    assert json.loads(path.read_text())["hostnames"] == ["a@host", "b@host"]
    assert [p.name for p in path.parent.iterdir()] == ["workers.json"]  # no temporary left


def test_an_unchanged_or_empty_answer_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    first = WorkerHints(path)
    first.save(["a@host"])
    written = path.stat().st_mtime_ns
    os.utime(path, ns=(written - 10**9, written - 10**9))
    first.save(["a@host"])
    first.save([])  # a call that heard nobody keeps the last hint
    assert path.stat().st_mtime_ns == written - 10**9
    assert first.load() == {"a@host"}


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"saved": "x"}',
                                     '{"saved": 1, "hostnames": 5}'])
def test_a_damaged_file_is_no_hint(tmp_path: Path, content: str) -> None:
    path = tmp_path / "workers.json"
    path.write_text(content)
    assert WorkerHints(path).load() == set()


def test_an_old_hint_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"saved": time.time() - hints.MAX_AGE - 60,
                                "hostnames": ["a@host"]}))
    assert WorkerHints(path).load() == set()


def test_a_missing_file_and_an_unwritable_folder_cost_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = WorkerHints(blocker / "workers.json")  # its folder would be a file
    assert unwritable.load() == set()
    unwritable.save(["a@host"])  # swallowed
    assert blocker.read_text() == ""


def test_each_broker_and_exchange_has_its_own_file_named_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def path_for(url: str, exchange: str = "celery") -> Path:
        app = Celery("hints", broker=url, set_as_current=False)
        app.conf.control_exchange = exchange
        return WorkerHints.for_app(app).path

    one = path_for("amqp://user:secret@broker:5672//")
    assert one.parent == tmp_path / "celery-observe"
    assert one == path_for("amqp://user:other-secret@broker:5672//")
    assert len({one, path_for("amqp://user:secret@broker:5672/vhost"),
                path_for("amqp://user:secret@broker:5672//", "billing")}) == 3
    assert "secret" not in str(one)
