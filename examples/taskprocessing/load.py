"""One round of load with the mix a real system sees, and the outcomes it must produce."""

from __future__ import annotations

from collections import Counter

from . import tasks
from .tasks import FLAKY_CUSTOMER

#: What one round makes the workers count, by outcome (`retry` is the flaky notification's
#: first try; its second try is one of the successes).
OUTCOMES_PER_ROUND = Counter({"success": 13, "failure": 1, "retry": 1})
#: Messages one round leaves in the queue no worker consumes.
UNCONSUMED_PER_ROUND = 1


def send_round() -> int:
    """Send one round; returns how many messages were published."""
    sent = [
        *(tasks.refresh_dashboard_cache.delay(user_id=user) for user in (1, 2, 3)),
        tasks.refresh_dashboard_cache.delay(),                        # all users
        *(tasks.warm_dashboard_cache.delay(user_id=user) for user in (1, 2)),
        tasks.performance_analysis.delay(),                           # slow: 0.5 s
        *(tasks.export_dashboard_data.delay(user_id=4, export_format=kind)
          for kind in ("json", "csv", "xlsx")),                       # xlsx: a failure
        tasks.send_notification.delay(user_id=FLAKY_CUSTOMER, message="Your export is ready",
                                      notification_type="info"),     # retried once
        tasks.send_notification.delay(user_id=8, message="Usage is at 90%",
                                      notification_type="warning"),
        tasks.cleanup_old_data.delay(days_old=60),                    # slow-ish: 0.2 s
        tasks.debug_task.delay(),
        tasks.rebuild_search_index.delay(),                           # no consumer
    ]
    return len(sent)
