"""What each channel receives for a batch of notices: exact payloads, built without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budgetops.engine.notices import Notice
from budgetops.notify.render import (
    MAX_LISTED,
    Batch,
    email_message,
    plain_text,
    slack_json,
    teams_json,
    webhook_json,
)

AT = datetime(2026, 1, 12, 9, 30, tzinfo=UTC)
BUDGET = "RiskBudget payments/checkout"

YELLOW = Notice(
    BUDGET,
    "BandChanged",
    "checkout: Green -> Yellow, 80 / 200 RP (40%)",
    severity="warning",
    at=AT,
    details=(
        "Still allowed: standard, low-risk, security-fix, incident",
        "Window 2026-01 resets at 2026-02-01T00:00:00Z",
    ),
)
GREEN = Notice(BUDGET, "BandChanged", "checkout: Yellow -> Green, 78 / 200 RP (39%)", at=AT)


def test_one_notice_as_plain_text() -> None:
    assert plain_text(Batch(BUDGET, (YELLOW,))) == (
        "RiskBudget payments/checkout: BandChanged\n"
        "\n"
        "2026-01-12T09:30:00Z [warning] checkout: Green -> Yellow, 80 / 200 RP (40%)\n"
        "    Still allowed: standard, low-risk, security-fix, incident\n"
        "    Window 2026-01 resets at 2026-02-01T00:00:00Z\n"
    )


def test_webhook_carries_every_notice_as_data() -> None:
    batch = Batch(BUDGET, (YELLOW, Notice(BUDGET, "Recovered", "1 accounts no longer alerting")))
    assert webhook_json(batch) == {
        "budget": BUDGET,
        "notices": [
            {
                "reason": "BandChanged",
                "summary": "checkout: Green -> Yellow, 80 / 200 RP (40%)",
                "severity": "warning",
                "at": "2026-01-12T09:30:00Z",
                "details": [
                    "Still allowed: standard, low-risk, security-fix, incident",
                    "Window 2026-01 resets at 2026-02-01T00:00:00Z",
                ],
            },
            {
                "reason": "Recovered",
                "summary": "1 accounts no longer alerting",
                "severity": "info",
                "at": None,
                "details": [],
            },
        ],
        "dropped": 0,
        "text": plain_text(batch),
    }


def test_slack_escapes_its_markup_characters() -> None:
    batch = Batch(BUDGET, (YELLOW, GREEN))
    assert slack_json(batch) == {
        "text": "*RiskBudget payments/checkout: 2 notices*\n"
        "• 2026-01-12T09:30:00Z checkout: Green -&gt; Yellow, 80 / 200 RP (40%)\n"
        "    Still allowed: standard, low-risk, security-fix, incident\n"
        "    Window 2026-01 resets at 2026-02-01T00:00:00Z\n"
        "• 2026-01-12T09:30:00Z checkout: Yellow -&gt; Green, 78 / 200 RP (39%)"
    }


def test_teams_message_card_is_coloured_by_the_worst_severity() -> None:
    critical = Notice(BUDGET, "Exhausted", "checkout: 200 / 200 RP (100%)", severity="critical")
    assert teams_json(Batch(BUDGET, (YELLOW, critical))) == {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": "RiskBudget payments/checkout: 2 notices",
        "title": "RiskBudget payments/checkout: 2 notices",
        "themeColor": "C62828",
        "sections": [
            {
                "activityTitle": "checkout: Green -> Yellow, 80 / 200 RP (40%)",
                "activitySubtitle": "2026-01-12T09:30:00Z warning",
                "text": "Still allowed: standard, low-risk, security-fix, incident\n\n"
                "Window 2026-01 resets at 2026-02-01T00:00:00Z",
            },
            {
                "activityTitle": "checkout: 200 / 200 RP (100%)",
                "activitySubtitle": "critical",
            },
        ],
    }


def test_email_names_the_budget_in_the_subject_and_the_numbers_in_the_body() -> None:
    message = email_message(
        Batch(BUDGET, (YELLOW,)), sender="budgetops@example.com", recipients=["a@x.io", "b@x.io"]
    )
    assert message["Subject"] == "[BudgetOps] RiskBudget payments/checkout: BandChanged"
    assert message["From"] == "budgetops@example.com"
    assert message["To"] == "a@x.io, b@x.io"
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == plain_text(Batch(BUDGET, (YELLOW,)))


@pytest.mark.parametrize(
    ("count", "dropped", "remarks"),
    [
        (MAX_LISTED, 0, []),
        (MAX_LISTED + 5, 0, ["and 5 more"]),
        (3, 7, ["7 older notices were dropped while waiting to be sent"]),
        (
            MAX_LISTED + 1,
            2,
            ["and 1 more", "2 older notices were dropped while waiting to be sent"],
        ),
    ],
)
def test_a_long_batch_lists_the_first_notices_and_counts_the_rest(
    count: int, dropped: int, remarks: list[str]
) -> None:
    notices = tuple(Notice(BUDGET, "LowBalance", f"user:{i} is low") for i in range(count))
    batch = Batch(BUDGET, notices, dropped=dropped)
    listed = [f"[info] user:{i} is low" for i in range(min(count, MAX_LISTED))]
    assert plain_text(batch).splitlines()[2:] == [*listed, *remarks]
    assert slack_json(batch)["text"].splitlines()[-len(remarks) - 1 :] == [
        f"• user:{min(count, MAX_LISTED) - 1} is low",
        *remarks,
    ]
    sections = teams_json(batch)["sections"]
    assert len(sections) == min(count, MAX_LISTED) + (1 if remarks else 0)
    assert len(webhook_json(batch)["notices"]) == count
