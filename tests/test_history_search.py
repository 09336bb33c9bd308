"""History search: which finished tasks a filter keeps, row by row, with no broker."""

from __future__ import annotations

import pytest

from celery_observe.worker.history import FinishedTask, HistoryFilter, TaskHistory

ENTRIES = [
    FinishedTask("a1", "proj.billing.charge", "success", 10.0, 11.0, None),
    FinishedTask("a2", "proj.billing.refund", "failure", 12.0, 13.0, "ValueError"),
    FinishedTask("b1", "proj.mail.send", "retry", 14.0, 15.0, None),
    FinishedTask(None, "proj.mail.send", "revoked", None, 16.0, None),
]


@pytest.mark.parametrize(("where", "ids"), [
    pytest.param(HistoryFilter(), [None, "b1", "a2", "a1"], id="no condition: all, newest first"),
    pytest.param(HistoryFilter(task="proj.mail.send"), [None, "b1"], id="exact name"),
    pytest.param(HistoryFilter(task="proj.billing.*"), ["a2", "a1"], id="glob"),
    pytest.param(HistoryFilter(task="proj.BILLING.*"), [], id="names are case-sensitive"),
    pytest.param(HistoryFilter(state="failure"), ["a2"], id="state"),
    pytest.param(HistoryFilter(id_prefix="a"), ["a2", "a1"], id="id prefix"),
    pytest.param(HistoryFilter(id_prefix="a"), ["a2", "a1"], id="no id never matches a prefix"),
    pytest.param(HistoryFilter(since=13.0), [None, "b1", "a2"], id="since is inclusive"),
    pytest.param(HistoryFilter(until=13.0), ["a2", "a1"], id="until is inclusive"),
    pytest.param(HistoryFilter(task="proj.billing.*", state="success", since=10.5), ["a1"],
                 id="every condition must hold"),
])
def test_filter_rows(where: HistoryFilter, ids: list[str | None]) -> None:
    """Each filter keeps exactly the entries it names, newest first."""
    history = TaskHistory(10)
    for entry in ENTRIES:
        history.append(entry)
    assert [entry.task_id for entry in history.latest(10, where)] == ids


def test_limit_counts_matches_not_entries_scanned() -> None:
    """The limit applies to what matched: the newest N matches however old they are."""
    history = TaskHistory(100)
    history.append(FinishedTask("old", "proj.rare", "success", 0.0, 1.0, None))
    for n in range(50):
        history.append(FinishedTask(f"t{n}", "proj.common", "success", 2.0, 3.0, None))
    assert [e.task_id for e in history.latest(1, HistoryFilter(task="proj.rare"))] == ["old"]
    assert len(history.latest(5)) == 5
