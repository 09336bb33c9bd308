"""The example's own tests, as a user writes them with celery-observe's pytest fixtures.

    pytest examples/taskprocessing/test_tasks.py

Each test gets an observed worker of the example's app (in this process, on an in-memory
broker) and asserts on what that worker counted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TASKPROCESSING_RETRY_BACKOFF", "1")  # the seed's 60 s, shortened

import pytest
from celery import Celery

from examples.taskprocessing import tasks
from examples.taskprocessing.app import app


@pytest.fixture
def observe_app() -> Celery:
    return app


def test_a_notification_that_times_out_is_retried_then_sent(observe_worker, observe_metrics):
    """The flaky customer's gateway times out once: one retry, then one success."""
    tasks.send_notification.delay(tasks.FLAKY_CUSTOMER, "hello")
    observe_metrics.assert_task_counts("dashboard.tasks.send_notification", timeout=20,
                                       success=1, failure=0, retry=1)
    assert observe_metrics.value("celery_monitored_task_completed_total",
                                 task_name="dashboard.tasks.send_notification",
                                 customer_id=str(tasks.FLAKY_CUSTOMER)) == 1
    observe_metrics.assert_no_internal_faults()


def test_an_unsupported_export_is_a_failure_named_by_its_error(observe_worker, observe_metrics):
    """An export in a format the seed lacks fails with ValueError; a good one succeeds."""
    tasks.export_dashboard_data.delay(1, "xlsx")
    tasks.export_dashboard_data.delay(2, "csv")
    observe_metrics.assert_task_counts("dashboard.tasks.export_dashboard_data",
                                       success=1, failure=1)
    assert observe_metrics.value("celery_task_errors_total",
                                 task_name="dashboard.tasks.export_dashboard_data",
                                 error_type="ValueError") == 1
    observe_metrics.assert_duration_under("dashboard.tasks.export_dashboard_data", 1.0)
