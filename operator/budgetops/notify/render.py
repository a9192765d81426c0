"""What a notification says, per channel: pure functions from a batch of Notices to payloads.

The words come from the engine (`Notice.summary`, `details` and `headline`); here they are only
laid out for each destination, so a webhook, Slack, Teams and email read the same numbers under
the same subject (`[Warning] ...`, `[Critical] ...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from budgetops.apis.common import format_time
from budgetops.engine.notices import Notice, Severity

MAX_LISTED = 20
"""Notices spelled out in one message; the rest are counted, so a message stays readable."""

_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}
_TEAMS_COLOR: dict[Severity, str] = {"info": "2E7D32", "warning": "F9A825", "critical": "C62828"}


@dataclass(frozen=True, slots=True)
class Batch:
    """One message: a budget's notices, oldest first, and how many older ones were not kept."""

    budget: str
    notices: tuple[Notice, ...]
    dropped: int = 0

    @property
    def severity(self) -> Severity:
        return max((n.severity for n in self.notices), key=_RANK.__getitem__, default="info")

    @property
    def subject(self) -> str:
        """The seed's subject line, tagged by the worst severity and led by the first notice
        that has it: `[Warning] Risk Budget at 40% for checkout`, `[Critical] Risk Budget
        Exhausted for checkout (and 2 more notices)`."""
        worst = next(n for n in self.notices if n.severity == self.severity)
        what = worst.headline or f"{worst.reason} on {self.budget}"
        more = len(self.notices) - 1
        tail = f" (and {more} more notice{'s' if more > 1 else ''})" if more else ""
        return f"[{self.severity.capitalize()}] {what}{tail}"


def _listed(batch: Batch) -> tuple[Sequence[Notice], list[str]]:
    """The notices to spell out, and the closing remarks about those that are not."""
    remarks = []
    if len(batch.notices) > MAX_LISTED:
        remarks.append(f"and {len(batch.notices) - MAX_LISTED} more")
    if batch.dropped:
        remarks.append(f"{batch.dropped} older notices were dropped while waiting to be sent")
    return batch.notices[:MAX_LISTED], remarks


def _stamp(notice: Notice) -> str:
    return f"{format_time(notice.at)} " if notice.at else ""


def plain_text(batch: Batch) -> str:
    """The message as plain text: the generic webhook's `text` and the email body."""
    listed, remarks = _listed(batch)
    lines = [batch.subject, batch.budget, ""]
    for notice in listed:
        lines.append(f"{_stamp(notice)}[{notice.severity}] {notice.summary}")
        lines.extend(f"    {detail}" for detail in notice.details)
    lines.extend(remarks)
    return "\n".join(lines) + "\n"


def webhook_json(batch: Batch) -> dict[str, Any]:
    """The generic webhook body: every notice as data (the pending cap bounds them), plus text."""
    return {
        "budget": batch.budget,
        "subject": batch.subject,
        "severity": batch.severity,
        "notices": [
            {
                "reason": n.reason,
                "summary": n.summary,
                "severity": n.severity,
                "headline": n.headline,
                "at": format_time(n.at) if n.at else None,
                "details": list(n.details),
            }
            for n in batch.notices
        ],
        "dropped": batch.dropped,
        "text": plain_text(batch),
    }


def _slack_escape(text: str) -> str:
    """Slack reads `&`, `<` and `>` as markup (links, mentions); `->` is in every band change."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_json(batch: Batch) -> dict[str, Any]:
    """A Slack incoming-webhook message in mrkdwn: a bold title, one bullet per notice."""
    listed, remarks = _listed(batch)
    lines = [f"*{_slack_escape(batch.subject)}*", _slack_escape(batch.budget)]
    for notice in listed:
        lines.append(f"• {_stamp(notice)}{_slack_escape(notice.summary)}")
        lines.extend(f"    {_slack_escape(detail)}" for detail in notice.details)
    lines.extend(_slack_escape(remark) for remark in remarks)
    return {"text": "\n".join(lines)}


def teams_json(batch: Batch) -> dict[str, Any]:
    """A MessageCard, the format of Teams incoming webhooks; one section per notice."""
    listed, remarks = _listed(batch)
    sections: list[dict[str, Any]] = [
        {
            "activityTitle": notice.summary,
            "activitySubtitle": f"{_stamp(notice)}{notice.severity}",
            **({"text": "\n\n".join(notice.details)} if notice.details else {}),
        }
        for notice in listed
    ]
    if remarks:
        sections.append({"text": "\n\n".join(remarks)})
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": batch.subject,
        "title": batch.subject,
        "text": batch.budget,
        "themeColor": _TEAMS_COLOR[batch.severity],
        "sections": sections,
    }


def email_message(batch: Batch, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """A plain-text email; the subject says how bad and of what, the body the numbers."""
    message = EmailMessage()
    message["Subject"] = batch.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(plain_text(batch))
    return message
