"""Run checkov over infra/ (Bicep, offline) and fail unless every check passes or is skipped
with a justification next to its resource.

    .venv-checkov/bin/python infra/checks/run_checkov.py

Fails on: a failed check; a template checkov could not parse (checkov would otherwise skip it
silently); a skip without a reason; a run that checked nothing.
Standard library only: it runs in checkov's own venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parents[1]
MIN_REASON = 40


def main() -> int:
    checkov = Path(sys.executable).with_name("checkov")
    command = [
        str(checkov),
        "--framework",
        "bicep",
        "--skip-download",
        "--directory",
        str(INFRA),
        "--output",
        "json",
        "--compact",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        print(completed.stdout[-4000:], completed.stderr[-4000:], sep="\n", file=sys.stderr)
        print("checkov: no JSON report", file=sys.stderr)
        return 2
    if isinstance(report, list):
        [report] = [r for r in report if r.get("check_type") == "bicep"]
    summary = report.get("summary", {})
    results = report.get("results", {})
    failed = results.get("failed_checks", [])
    skipped = results.get("skipped_checks", [])
    passed = results.get("passed_checks", [])
    parsing_errors = results.get("parsing_errors", []) or []
    problems: list[str] = []

    for check in failed:
        problems.append(f"FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for path in parsing_errors:
        problems.append(f"PARSE ERROR {path}: checkov cannot read it, so checks nothing in it")
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        if len(reason.strip()) < MIN_REASON or reason == "No comment provided":
            problems.append(f"UNJUSTIFIED SKIP {check['check_id']} {check['resource']}: {reason!r}")

    if not passed:
        problems.append("no check passed: checkov scanned nothing")

    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        print(f"skip {check['check_id']:<14} {check['resource']:<58} {reason[:100]}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"checkov {summary.get('checkov_version', '?')}: {len(passed)} passed, {len(failed)} failed, "
        f"{len(skipped)} skipped (justified), {len(parsing_errors)} parsing errors, "
        f"{summary.get('resource_count', '?')} resources"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
