"""The SDK's pieces on their own: settings, the wire format, the file queue."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from budgetops.client import ClientConfig, InvalidToken
from budgetops.client.backlog import FileBacklog
from budgetops.client.records import Lease, UsageRecord
from budgetops.client.wire import budget_id_of, dumps, loads


def usage(seq: int, cost: str = "0.05") -> UsageRecord:
    return UsageRecord("lease_1", seq, f"req_{seq}", 10, Decimal(cost), "gpt-4", "openai", 1)


@pytest.mark.parametrize(
    "settings",
    [
        {"requested_budget": Decimal("10.001")},
        {"requested_budget": Decimal("1000.01")},
        {"requested_budget": 10.0},
        {"refresh_threshold": Decimal("-1")},
        {"batch_size": 0},
        {"flush_interval": 0},
        {"runtime_id": "has space"},
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        ClientConfig("http://127.0.0.1:1", "token", **settings)  # type: ignore[arg-type]


def test_money_is_written_as_numbers_with_two_decimals_and_read_as_decimal() -> None:
    text = dumps({"a": Decimal("10"), "b": [Decimal("0.5"), 3, "x", None, Decimal("0.045700")]})
    assert text == '{"a":10.00,"b":[0.50,3,"x",null,0.0457]}'
    assert loads(text)["a"] == Decimal("10.00")
    assert isinstance(loads(text)["a"], Decimal)


def test_what_is_finer_than_a_micro_dollar_is_carried_forward_so_the_total_is_rounded_up() -> None:
    lease = Lease("lease_1", Decimal("10.00"))
    costs = ("0.0000001", "0.0000001", "0.0457", "0.02", "0.0000008")
    charged = [lease.charge(Decimal(cost)) for cost in costs]
    assert charged == [
        (1, Decimal("0.000001")),
        (2, Decimal("0")),
        (3, Decimal("0.0457")),
        (4, Decimal("0.02")),
        (5, Decimal("0")),  # the exact total is 0.065701 again
    ]
    assert lease.reported == Decimal("0.065701")
    assert lease.remaining == Decimal("9.934299")


def test_the_budget_id_is_read_from_the_token_and_a_non_jwt_is_refused() -> None:
    with pytest.raises(InvalidToken):
        budget_id_of("not a jwt")
    with pytest.raises(InvalidToken, match="budget_id"):
        budget_id_of("e30.e30.sig")  # {} claims


def test_the_file_queue_keeps_what_is_not_acknowledged(tmp_path: Path) -> None:
    backlog = FileBacklog(tmp_path / "q" / "usage.jsonl")
    backlog.append([usage(1), usage(2)])
    backlog.append([usage(3)])
    with backlog.path.open("a") as file:
        file.write('{"lease_id": "lease_1", "seq"')  # torn by a crash
    assert [record.seq for record in backlog.load()] == [1, 2, 3]
    backlog.remove([usage(2)])
    assert [record.seq for record in FileBacklog(backlog.path).load()] == [1, 3]
    assert backlog.load()[0] == usage(1)


def test_a_refused_record_is_written_aside_with_its_reason(tmp_path: Path) -> None:
    backlog = FileBacklog(tmp_path / "usage.jsonl")
    backlog.reject([(usage(7), "INVALID_REQUEST: model")])
    (line,) = backlog.rejected_path.read_text().splitlines()
    assert json.loads(line)["seq"] == 7
    assert json.loads(line)["reason"] == "INVALID_REQUEST: model"
