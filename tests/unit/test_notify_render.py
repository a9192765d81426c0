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
        "Consider pausing non-critical changes until the next budget window.",
        "Still allowed: standard, low-risk, security-fix, incident",
        "Window 2026-01 resets at 2026-02-01T00:00:00Z",
    ),
    headline="Risk Budget at 40% for checkout",
)
GREEN = Notice(BUDGET, "BandChanged", "checkout: Yellow -> Green, 78 / 200 RP (39%)", at=AT)


def test_one_notice_as_plain_text() -> None:
    assert plain_text(Batch(BUDGET, (YELLOW,))) == (
        "[Warning] Risk Budget at 40% for checkout\n"
        "RiskBudget payments/checkout\n"
        "\n"
        "2026-01-12T09:30:00Z [warning] checkout: Green -> Yellow, 80 / 200 RP (40%)\n"
        "    Consider pausing non-critical changes until the next budget window.\n"
        "    Still allowed: standard, low-risk, security-fix, incident\n"
        "    Window 2026-01 resets at 2026-02-01T00:00:00Z\n"
    )


def test_webhook_carries_every_notice_as_data() -> None:
    batch = Batch(BUDGET, (YELLOW, Notice(BUDGET, "Recovered", "1 accounts no longer alerting")))
    assert webhook_json(batch) == {
        "budget": BUDGET,
        "subject": "[Warning] Risk Budget at 40% for checkout (and 1 more notice)",
        "severity": "warning",
        "notices": [
            {
                "reason": "BandChanged",
                "summary": "checkout: Green -> Yellow, 80 / 200 RP (40%)",
                "severity": "warning",
                "headline": "Risk Budget at 40% for checkout",
                "at": "2026-01-12T09:30:00Z",
                "details": [
                    "Consider pausing non-critical changes until the next budget window.",
                    "Still allowed: standard, low-risk, security-fix, incident",
                    "Window 2026-01 resets at 2026-02-01T00:00:00Z",
                ],
            },
            {
                "reason": "Recovered",
                "summary": "1 accounts no longer alerting",
                "severity": "info",
                "headline": "",
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
        "text": "*[Warning] Risk Budget at 40% for checkout (and 1 more notice)*\n"
        "RiskBudget payments/checkout\n"
        "• 2026-01-12T09:30:00Z checkout: Green -&gt; Yellow, 80 / 200 RP (40%)\n"
        "    Consider pausing non-critical changes until the next budget window.\n"
        "    Still allowed: standard, low-risk, security-fix, incident\n"
        "    Window 2026-01 resets at 2026-02-01T00:00:00Z\n"
        "• 2026-01-12T09:30:00Z checkout: Yellow -&gt; Green, 78 / 200 RP (39%)"
    }


def test_teams_message_card_is_coloured_by_the_worst_severity() -> None:
    critical = Notice(
        BUDGET,
        "BandChanged",
        "checkout: Yellow -> Exhausted, 200 / 200 RP (100%)",
        severity="critical",
        headline="Risk Budget Exhausted for checkout",
    )
    assert teams_json(Batch(BUDGET, (YELLOW, critical))) == {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": "[Critical] Risk Budget Exhausted for checkout (and 1 more notice)",
        "title": "[Critical] Risk Budget Exhausted for checkout (and 1 more notice)",
        "text": "RiskBudget payments/checkout",
        "themeColor": "C62828",
        "sections": [
            {
                "activityTitle": "checkout: Green -> Yellow, 80 / 200 RP (40%)",
                "activitySubtitle": "2026-01-12T09:30:00Z warning",
                "text": "Consider pausing non-critical changes until the next budget window.\n\n"
                "Still allowed: standard, low-risk, security-fix, incident\n\n"
                "Window 2026-01 resets at 2026-02-01T00:00:00Z",
            },
            {
                "activityTitle": "checkout: Yellow -> Exhausted, 200 / 200 RP (100%)",
                "activitySubtitle": "critical",
            },
        ],
    }


def test_email_says_how_bad_in_the_subject_and_the_numbers_in_the_body() -> None:
    message = email_message(
        Batch(BUDGET, (YELLOW,)), sender="budgetops@example.com", recipients=["a@x.io", "b@x.io"]
    )
    assert message["Subject"] == "[Warning] Risk Budget at 40% for checkout"
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
    assert plain_text(batch).splitlines()[3:] == [*listed, *remarks]
    assert slack_json(batch)["text"].splitlines()[-len(remarks) - 1 :] == [
        f"• user:{min(count, MAX_LISTED) - 1} is low",
        *remarks,
    ]
    sections = teams_json(batch)["sections"]
    assert len(sections) == min(count, MAX_LISTED) + (1 if remarks else 0)
    assert len(webhook_json(batch)["notices"]) == count


def test_the_subject_is_tagged_by_the_worst_notice_and_falls_back_to_the_reason() -> None:
    window = Notice(BUDGET, "WindowClosed", "checkout: window 2026-01 closed at 80 / 200 RP")
    low = Notice(BUDGET, "LowBalance", "user:bob: balance low", severity="warning")
    assert Batch(BUDGET, (window,)).subject == (
        "[Info] WindowClosed on RiskBudget payments/checkout"
    )
    assert Batch(BUDGET, (window, low, YELLOW)).subject == (
        "[Warning] LowBalance on RiskBudget payments/checkout (and 2 more notices)"
    )


RED = Notice(
    "TrustBudget issuance",
    "Exhausted",
    "user:alice: exhausted, 0 / 100 points remain (0.0%)",
    severity="critical",
    details=("Issuance to this account is refused until it resets.",),
    headline="Trust Budget Exhausted for user:alice",
)


def test_every_channel_leads_with_the_same_subject_and_advice() -> None:
    """Email, Slack, Teams and the webhook each put the seed's subject first and carry the
    advice lines, so whoever reads any one of them reads the same words."""
    batch = Batch("TrustBudget issuance", (RED,))
    subject = "[Critical] Trust Budget Exhausted for user:alice"
    advice = "Issuance to this account is refused until it resets."
    email = email_message(batch, sender="b@x.io", recipients=["a@x.io"])
    assert email["Subject"] == subject
    assert email.get_content().startswith(f"{subject}\nTrustBudget issuance\n")
    assert slack_json(batch)["text"].splitlines()[:2] == [f"*{subject}*", "TrustBudget issuance"]
    assert advice in slack_json(batch)["text"]
    teams = teams_json(batch)
    assert (teams["title"], teams["themeColor"], teams["sections"][0]["text"]) == (
        subject,
        "C62828",
        advice,
    )
    body = webhook_json(batch)
    assert (body["subject"], body["severity"], body["notices"][0]["details"]) == (
        subject,
        "critical",
        [advice],
    )
