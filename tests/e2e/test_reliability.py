"""The reliability suite, short form (the long form: ``python -m bench.reliability``).

Scripted IVR calls (sales by DTMF, support by speech, silence to the operator, a hang-up mid-menu, a
declined transfer; every call recorded) go through the app while ACS throttles and fails requests,
callbacks and Event Grid events come twice, late, out of order or not at all, Azurite restarts mid-call
and mid-copy, and the app's host is killed mid-call, mid-request and mid-copy and started again.
Behaviour, not timing, is asserted: every call completes as scripted, no action is carried out twice,
no event is lost, every recording is copied and verified.
"""

from __future__ import annotations

import pytest

from bench.reliability import DISRUPTIONS, run

CALLS = 15


@pytest.mark.timeout(300)
def test_calls_survive_faults_restarts_and_host_kills(capsys):
    report = run(CALLS, concurrency=5, disruptions=list(DISRUPTIONS), seed=8)
    with capsys.disabled():
        print("\nreliability suite (short form):\n" + "\n".join("  " + line for line in report.lines()))
    details = "\n".join(report.problems[:30] + report.failed_timelines[:2]) + f"\napp log: {report.app_log}"
    assert report.placed == CALLS
    assert report.completed == report.placed, details
    assert report.duplicated == 0, details
    assert report.lost == 0, details
    assert report.recordings == CALLS and report.recordings_verified == report.recordings, details
    # What the suite claims to survive did happen.
    assert sorted(report.disruptions) == sorted(DISRUPTIONS) and not report.missed, report.lines()
    assert {"request", "callback", "eventgrid", "download"} <= set(report.faults_fired), report.lines()
    assert report.dropped_on_purpose > 0


@pytest.mark.timeout(300)
def test_calls_survive_the_same_on_the_flex_shape_with_instances_coming_and_going(capsys):
    """Three HTTP instances behind the front, each call's callbacks spread over them, one instance per Event Grid
    function; a host kill is one instance killed (and replaced), and instances are recycled, added and drained
    mid-call besides. The same must hold; ETag conflicts are counted per call (each instance logs its own)."""
    from bench.reliability import SCALE_EVENTS

    disruptions = [*DISRUPTIONS, *SCALE_EVENTS]
    report = run(CALLS, concurrency=5, disruptions=disruptions, seed=8, instances=3)
    with capsys.disabled():
        print("\nreliability suite, Flex shape (short form):\n" + "\n".join("  " + line for line in report.lines()))
    details = "\n".join(report.problems[:30] + report.failed_timelines[:2]) + f"\napp logs: {report.app_log}"
    assert report.placed == CALLS
    assert report.completed == report.placed, details
    assert report.duplicated == 0, details
    assert report.lost == 0, details
    assert report.recordings == CALLS and report.recordings_verified == report.recordings, details
    assert sorted(report.disruptions) == sorted(disruptions) and not report.missed, report.lines()
    # Instances met on calls' rows: the conflicts were counted, and retried (the calls completed).
    assert len(report.conflicts_per_call) == CALLS and sum(report.conflicts.values()) > 0, report.lines()
