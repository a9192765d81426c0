"""The chart runs two replicas and each publishes only its own writes: one chain's records
are spread over both pods' logs. `verify --audit` takes one log per pod and reads them as
one, each chain in seq order (found with real pods: neither pod's log, nor both
concatenated, verified)."""

from __future__ import annotations

import json

from budgetops.engine import audit

from .test_audit import BUDGET, check, fresh, messages, published


def _pods() -> tuple[list[str], list[str], object]:
    """A trail of 4 batches, each batch (records, then its signed head) written by one of two
    replicas in turn, with the log lines each replica adds between them."""
    book = fresh()
    lines = published(book, batches=4)
    batches: list[list[str]] = [[]]
    for line in lines:
        batches[-1].append(line)
        if '"prev"' not in line:  # a head closes its batch
            batches.append([])
    first = ['{"level": "INFO", "message": "serving"}', *batches[0], *batches[2]]
    second = [*batches[1], '{"level": "WARNING", "message": "x"}', *batches[3]]
    return first, second, book


def test_two_replicas_logs_verify_as_one() -> None:
    first, second, book = _pods()
    assert not check([*first, *second], book).ok  # concatenated: out of order
    merged = audit.merge_logs([first, second])
    report = check([text for _, _, text in merged], book)  # type: ignore[arg-type]
    assert report.ok, messages(report)
    assert report.summary()[BUDGET]["records"] == len(first) + len(second) - 2 - 4
    assert merged[0][:2] == (0, 2)  # the first pod's second line: its first record


def test_a_log_out_of_order_still_shows_after_the_merge() -> None:
    first, second, book = _pods()
    first[1], first[2] = first[2], first[1]
    merged = audit.merge_logs([first, second])
    report = check([text for _, _, text in merged], book)  # type: ignore[arg-type]
    assert any("out of order" in problem for problem in messages(report)), messages(report)


def test_each_merged_line_says_which_log_and_line_it_came_from() -> None:
    first, second, _ = _pods()
    record = json.loads(second[0])
    record["amount"] = "1000"
    second[0] = json.dumps(record)
    merged = audit.merge_logs([first, second])
    where = [(index, number) for index, number, text in merged if text == second[0]]
    assert where == [(1, 1)]
