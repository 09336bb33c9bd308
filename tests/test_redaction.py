"""celery_observe.redaction: passwords masked in URLs and messages, task arguments redacted."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

from celery_observe import Cluster
from celery_observe.faults import FaultLog
from celery_observe.redaction import (
    REDACTED,
    Masker,
    TaskArgsLogFilter,
    mask_text,
    mask_url,
    secrets_of,
)

PASSWORD = "s3cret-pw"


def test_mask_url_masks_the_password_and_keeps_the_rest() -> None:
    """A URL with user and password keeps scheme, user, host, port and path."""
    assert mask_url("amqp://guest:guest@10.0.0.1:5672//") == "amqp://guest:**@10.0.0.1:5672//"
    assert mask_url(f"redis://:{PASSWORD}@127.0.0.1:6379/0") == "redis://:**@127.0.0.1:6379/0"


def test_mask_url_leaves_a_url_without_password_as_it_is() -> None:
    """URLs without a password, with or without a user name, come back unchanged."""
    for url in ("redis://127.0.0.1:6379/0", "http://127.0.0.1:9540/metrics",
                "amqp://guest@host//", "memory://"):
        assert mask_url(url) == url


def test_mask_url_hides_all_credentials_of_a_url_kombu_cannot_parse() -> None:
    """A URL with a bad port loses its whole user info rather than showing the password."""
    assert mask_url(f"rediss://:{PASSWORD}@host:notaport/0") == "rediss://**@host:notaport/0"


def test_mask_text_masks_every_url_in_a_message() -> None:
    """Each URL in free text is masked; the words around it stay."""
    text = (f"Cannot connect to redis://:{PASSWORD}@a:1/0 (then 'amqp://u:{PASSWORD}@b//'), "
            "see http://docs/x.")
    assert mask_text(text) == ("Cannot connect to redis://:**@a:1/0 (then 'amqp://u:**@b//'), "
                               "see http://docs/x.")


def test_mask_text_masks_known_secrets_outside_urls() -> None:
    """A known password is masked where it stands alone, also inside a URL without userinfo."""
    text = f"AUTH {PASSWORD} failed; redis://h:1/0?password={PASSWORD}"
    assert mask_text(text, [PASSWORD]) == "AUTH ** failed; redis://h:1/0?password=**"


def test_mask_text_keeps_the_user_name_of_a_masked_url() -> None:
    """guest:guest reads as Celery shows it, amqp://guest:**@, not with the user masked."""
    assert mask_text("broker amqp://guest:guest@h// down", ["guest"]) == (
        "broker amqp://guest:**@h// down")


def test_secrets_of_reads_every_url_setting_decoded_and_as_given() -> None:
    """Broker (all failover URLs), read/write URLs, backend and transport options count."""
    app = Celery(broker="redis://:p%40ss@a:1/0;redis://:second@b:2/0",
                 backend="db+postgresql://user:dbpw@db/x", set_as_current=False)
    app.conf.broker_read_url = "amqp://u:readpw@r//"
    app.conf.broker_write_url = ["amqp://u:writepw@w//"]
    app.conf.broker_transport_options = {"password": "sentinelpw"}
    assert secrets_of(app) == {"p@ss", "p%40ss", "second", "dbpw", "readpw", "writepw",
                               "sentinelpw"}


def test_secrets_of_an_app_without_passwords_is_empty() -> None:
    """No password configured: nothing to mask beyond URLs."""
    assert secrets_of(Celery(broker="redis://h:1/0", set_as_current=False)) == frozenset()


def test_fault_log_masks_the_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A library error that quotes the broker URL is logged with the password masked."""
    faults = FaultLog(mask=Masker([PASSWORD]))
    try:
        raise ConnectionError(f"Error connecting to redis://:{PASSWORD}@h:1/0 ({PASSWORD})")
    except ConnectionError as exc:
        with caplog.at_level(logging.ERROR, logger="celery_observe"):
            faults.report("queues", exc)
    (record,) = caplog.records
    assert PASSWORD not in caplog.text
    assert record.getMessage().endswith(
        "ConnectionError: Error connecting to redis://:**@h:1/0 (**)")


def test_cluster_errors_are_masked() -> None:
    """Cluster's broker error and workers' error replies never carry the app's password."""
    app = Celery(broker=f"redis://:{PASSWORD}@127.0.0.1:1/0", set_as_current=False)
    with Cluster(app) as cluster:
        described = cluster._describe_error(OSError(f"AUTH {PASSWORD} refused"))
        _data, errors = cluster._data({"w1": {"error": f"boom at redis://:{PASSWORD}@h/0"}})
    assert described == "OSError: AUTH ** refused (broker redis://:**@127.0.0.1:1/0)"
    assert errors == {"w1": "boom at redis://:**@h/0"}


def _pool_apply_record() -> logging.LogRecord:
    return logging.LogRecord("celery.pool", logging.DEBUG, __file__, 1,
                             "TaskPool: Apply %s (args:%s kwargs:%s)",
                             ("<function fast_trace_task>", "('t', 'card-4111')", "{'x': 1}"),
                             None)


def test_task_args_log_filter_redacts_celery_pool_apply_line() -> None:
    """Celery's TaskPool: Apply debug line keeps its target and loses the arguments."""
    record = _pool_apply_record()
    assert TaskArgsLogFilter().filter(record) is True
    assert record.getMessage() == (
        f"TaskPool: Apply <function fast_trace_task> (args:{REDACTED} kwargs:{REDACTED})")


def test_task_args_log_filter_lets_other_lines_through_unchanged() -> None:
    """Any other record passes untouched."""
    record = logging.LogRecord("celery.pool", logging.DEBUG, __file__, 1, "pool %s started",
                               ("prefork",), None)
    assert TaskArgsLogFilter().filter(record) is True
    assert record.getMessage() == "pool prefork started"
