"""Risk points computed from a release's vulnerability report (`--vulnerabilities`)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from budgetops.apis.riskbudget import MAX_RISK_POINTS, VulnerabilityPoints
from budgetops.engine.vulnerabilities import (
    ENTRIES_MAX,
    ID_MAX,
    REPORT_MAX_BYTES,
    ReportError,
    parse_report,
    score,
)
from budgetops.store.sqlite import SQLiteStore
from tests.unit.test_cli import db, run  # noqa: F401  (db is a fixture)
from tests.unit.test_cli_budgets import payments


def trivy(*found: tuple[str, str]) -> bytes:
    """A Trivy report: the findings split over two targets, as an image's OS and app."""
    half = len(found) // 2
    results = [
        {
            "Target": target,
            "Vulnerabilities": [{"VulnerabilityID": i, "Severity": s} for i, s in part],
        }
        for target, part in (("os", found[:half]), ("app", found[half:]))
    ]
    return json.dumps({"SchemaVersion": 2, "Results": [*results, {"Target": "clean"}]}).encode()


def cyclonedx(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"bomFormat": "CycloneDX", "vulnerabilities": list(entries)}).encode()


def vuln(ident: str, *severities: str, state: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": ident, "ratings": [{"severity": s} for s in severities]}
    if state is not None:
        entry["analysis"] = {"state": state}
    return entry


def test_trivy_counts_an_id_once_at_its_highest_severity() -> None:
    report = parse_report(
        trivy(("CVE-1", "LOW"), ("CVE-2", "MEDIUM"), ("CVE-1", "CRITICAL"), ("CVE-3", "UNKNOWN")),
        name="t.json",
    )
    assert report.format == "trivy"
    assert report.findings == {"CVE-1": "critical", "CVE-2": "medium", "CVE-3": "unknown"}


def test_cyclonedx_leaves_out_what_vex_says_does_not_affect_the_release() -> None:
    report = parse_report(
        cyclonedx(
            vuln("CVE-1", "medium", "high"),
            vuln("CVE-2", "critical", state="not_affected"),
            vuln("CVE-3", "high", state="false_positive"),
            vuln("CVE-4", "low", state="resolved"),
            vuln("CVE-5", "critical", state="exploitable"),
            vuln("CVE-6", "info"),
            vuln("CVE-7"),
        ),
        name="bom.json",
    )
    assert report.format == "cyclonedx"
    assert report.findings == {
        "CVE-1": "high",
        "CVE-5": "critical",
        "CVE-6": "none",
        "CVE-7": "unknown",
    }
    assert report.excluded == {"CVE-2", "CVE-3", "CVE-4"}


BAD = [
    (b"", "not JSON"),
    (b"[1]", "not an object"),
    (b'{"foo": 1}', "neither a Trivy report"),
    (b'{"Results": {}}', "Results is not a list"),
    (b'{"Results": [1]}', "a Results entry is not an object"),
    (b'{"Results": [{"Vulnerabilities": 3}]}', "Vulnerabilities is not a list"),
    (b'{"Results": [{"Vulnerabilities": ["x"]}]}', "a vulnerability entry is not an object"),
    (trivy(("CVE-1", "SEVERE")), "unknown severity 'SEVERE'"),
    (trivy(("CVE-1", "low")), "unknown severity 'low'"),
    (trivy(("", "LOW")), "a vulnerability id must be"),
    (trivy(("C" * (ID_MAX + 1), "LOW")), "a vulnerability id must be"),
    (trivy(("CVE\n1", "LOW")), "a vulnerability id must be"),
    (b'{"Results": [{"Vulnerabilities": [{"VulnerabilityID": 7, "Severity": "LOW"}]}]}', "id"),
    (cyclonedx(vuln("CVE-1", "HIGH")), "unknown severity 'HIGH'"),
    (cyclonedx(vuln("CVE-1", "high", state="fine")), "CVE-1: unknown VEX analysis state"),
    (cyclonedx({"id": "CVE-1", "analysis": "x"}), "CVE-1: analysis is not an object"),
    (cyclonedx({"id": "CVE-1", "ratings": [3]}), "CVE-1: a rating is not an object"),
    (b'{"bomFormat": "CycloneDX", "vulnerabilities": {}}', "vulnerabilities is not a list"),
    (b'{"Results": [' * 200 + b"]" * 200 + b"}", "not JSON within bounds"),
    (b'{"SchemaVersion": 1' + b"0" * 100 + b"}", "not JSON within bounds"),
    (b"\xff\xfe", "not JSON"),
]


@pytest.mark.parametrize(("data", "problem"), BAD)
def test_a_bad_report_is_one_error_naming_the_file_and_problem(data: bytes, problem: str) -> None:
    with pytest.raises(ReportError) as raised:
        parse_report(data, name="r.json")
    message = str(raised.value)
    assert message.startswith("r.json: ")
    assert problem in message
    assert "\n" not in message


def test_size_and_entry_bounds() -> None:
    with pytest.raises(ReportError, match="larger than"):
        parse_report(b" " * (REPORT_MAX_BYTES + 1), name="r.json")
    many = [("CVE-1", "LOW")] * (ENTRIES_MAX + 1)
    with pytest.raises(ReportError, match=f"more than {ENTRIES_MAX}"):
        parse_report(trivy(*many), name="r.json")
    with pytest.raises(ReportError, match=f"more than {ENTRIES_MAX}"):
        parse_report(cyclonedx(*[vuln("CVE-1")] * (ENTRIES_MAX + 1)), name="r.json")
    assert parse_report(trivy(*many[:ENTRIES_MAX]), name="r.json").findings == {"CVE-1": "low"}


def test_introduced_pay_in_full_and_carried_forward_their_percent_rounded_up() -> None:
    now = parse_report(
        trivy(("CVE-N1", "CRITICAL"), ("CVE-N2", "LOW"), ("CVE-O1", "HIGH"), ("CVE-O2", "LOW")),
        name="now.json",
    )
    before = parse_report(
        cyclonedx(vuln("CVE-O1", "medium"), vuln("CVE-O2", "low", state="not_affected")),
        name="before.json",
    )
    weights = VulnerabilityPoints()  # critical 10, high 5, medium 2, low 1, carried 50%
    scored = score(now, before, weights)
    assert (scored.introduced["critical"], scored.introduced["low"]) == (1, 1)
    # carried at today's severity; an id the baseline listed as not affecting still was listed
    assert (scored.carried_forward["high"], scored.carried_forward["low"]) == (1, 1)
    assert scored.points == 10 + 1 + 3  # (5 + 1) * 50% = 3
    assert score(now, None, weights).points == 10 + 1 + 5 + 1
    odd = VulnerabilityPoints(critical=0, high=3, low=0, carried_forward_percent=10)
    assert score(now, before, odd).points == 1  # 3 * 10% = 0.3, rounded up
    assert score(now, before, VulnerabilityPoints(carried_forward_percent=0)).points == 11
    huge = VulnerabilityPoints(critical=MAX_RISK_POINTS)
    assert (
        score(
            parse_report(trivy(("A", "CRITICAL"), ("B", "CRITICAL")), name="r"), None, huge
        ).points
        == MAX_RISK_POINTS
    )


def test_vex_excluded_and_none_severities_cost_nothing() -> None:
    report = parse_report(
        cyclonedx(vuln("CVE-1", "critical", state="resolved"), vuln("CVE-2", "info")),
        name="bom.json",
    )
    assert score(report, None, VulnerabilityPoints(unknown=7)).points == 0


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_consume_charges_the_computed_points_and_the_verdict_names_the_inputs(
    db: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    now = trivy(("CVE-N", "CRITICAL"), ("CVE-O", "HIGH"))
    before = trivy(("CVE-O", "HIGH"))
    report, baseline = write(tmp_path, "now.json", now), write(tmp_path, "before.json", before)
    args = ["--service", "payments-api", "--vulnerabilities", report, "--baseline", baseline]
    code, out = run("check", *args, "-o", "json", "--db", db)
    assert code == 0, out
    statement = json.loads(base64.b64decode(json.loads(out)["payload"]))
    release = statement["predicate"]["release"]
    assert release["points"] == 13  # 10 introduced + 5 carried at 50%, rounded up
    assert release["vulnerabilities"]["inputs"] == [
        {"role": "report", "name": "now.json", "format": "trivy",
         "digest": f"sha256:{hashlib.sha256(now).hexdigest()}"},
        {"role": "baseline", "name": "before.json", "format": "trivy",
         "digest": f"sha256:{hashlib.sha256(before).hexdigest()}"},
    ]  # fmt: skip
    assert release["vulnerabilities"]["introduced"]["critical"] == 1
    assert release["vulnerabilities"]["carriedForward"]["high"] == 1
    assert payments(db).status.consumed == 0  # check charges nothing

    code, out = run("consume", *args, "--release-id", "r1", "--db", db)
    assert code == 0, out
    assert payments(db).status.consumed == 13
    store = SQLiteStore(db)
    try:
        (*_, (_, digest, _, _)) = store.verdict_index()  # the consume's signed verdict
        envelope = store.verdict(digest)
    finally:
        store.close()
    assert envelope is not None
    signed = json.loads(base64.b64decode(envelope["payload"]))
    assert signed["predicate"]["release"]["key"] == "r1"
    assert signed["predicate"]["release"]["vulnerabilities"] == release["vulnerabilities"]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--points", "3", "--vulnerabilities", "{report}"], "not both"),
        (["--points", "3", "--baseline", "{report}"], "--baseline goes with --vulnerabilities"),
        ([], "takes --points or --vulnerabilities"),
        (["--vulnerabilities", "{missing}"], "cannot be read"),
        (["--vulnerabilities", "{bad}"], "bad.json: unknown severity"),
        (["--vulnerabilities", "{report}", "--baseline", "{bad}"], "bad.json: unknown severity"),
    ],
)
def test_bad_flags_or_files_exit_2_with_one_line_and_charge_nothing(
    db: str,  # noqa: F811
    tmp_path: Path,
    flags: list[str],
    problem: str,
) -> None:
    files = {
        "report": write(tmp_path, "ok.json", trivy(("CVE-1", "LOW"))),
        "bad": write(tmp_path, "bad.json", trivy(("CVE-1", "SEVERE"))),
        "missing": str(tmp_path / "missing.json"),
    }
    argv = [flag.format(**files) for flag in flags]
    code, out = run("consume", "--service", "payments-api", *argv, "--db", db)
    assert code == 2
    assert out.count("\n") == 1, out
    assert problem in out
    assert payments(db).status.consumed == 0
