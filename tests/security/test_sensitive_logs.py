"""A card number, a caller's words and a caller's number against every log line and every stored byte.

One call, end to end through the app under the local host (``LOG_LEVEL=DEBUG``: every level the app emits)
with the ACS simulator and Azurite, recorded (``RECORDING_MODE=on_connect``):

1. the caller dials a payment line from ``CALLER``; the flow's ``on_tone`` (``*`` for an agent) has continuous
   DTMF on while the welcome plays;
2. the flow collects the card number in a ``sensitive`` ``collect_digits`` node. While that recognize listens,
   continuous-DTMF tone events of the card's digits reach the app: ACS delivering the keys to continuous DTMF
   as well, or tones pressed just before, delivered late. The simulator routes a key to a listening recognize
   only, so the test has it emit those events itself (``Engine.emit``: shaped and signed as ACS does). Then the
   caller keys the card number into the recognize;
3. once the card is taken, a speech recognition asked through the control API (not sensitive) hears a
   distinctive sentence, which the API's result shows while the call lasts;
4. the caller hangs up; the call's records and the recording's copy are written.

Then EVERY line the app process wrote, EVERY row of EVERY table in Azurite, and every blob's name, metadata,
tags (and its content, for JSON documents) are scanned. Nowhere may appear: the card number, any run of 8 of
its digits, any standalone run of 4 to 7 of them, its digits as tone names (``"four"``, ``four one one one``),
or the caller's sentence. The caller's full number may not appear in a log line (the masked form,
``+*******0177``, may). In storage the caller's number is legitimate data, kept where the app needs it (the
call's state, to address the caller; its record, for reporting; the recording's copy, for QA), so it is only
required to stay in those places. The simulator's timeline must show continuous DTMF stopped before the
sensitive recognize started, not started again until the digits were in, and started again after.

Worked before f82571e: 24 findings. 16 log lines at INFO named the card's digits as continuous-DTMF tones
(``tone four (sequence 1)``, ``tone one (sequence 2)``, ...); 2 carried the caller's sentence (``recognized
speech: ...``, and the call's whole outcome logged when it ended); 2 the caller's full number (``incoming call
from 4:+14255550177 ...``, ``participants now ['4:+14255550177']``); the sentence was stored in 2 rows (the
call's state, and its flow outcome in the call record), after the call too; and the timeline showed continuous
DTMF on throughout the card's collection (never stopped before it, so never started again after).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from simulator import result_codes as rc
from simulator.engine import Config
from simulator.runner import SimulatorThread
from tests.e2e.conftest import AppStack
from tests.support.calls import until
from tools.apphost import start_app

CALLER = "+14255550177"
CALLER_RAW = "4:" + CALLER
LINE = "+18005550177"
CARD = "4111111111111111"
SENTENCE = "my mothers maiden name is Zanzibar Quokkaberry"
SPEECH_WORDS = ("Zanzibar", "Quokkaberry")
TONE_NAMES = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "*": "asterisk", "#": "pound",
}
CARD_PROMPT = "Please enter your card number, then press pound."
START_DTMF, STOP_DTMF = "StartContinuousDtmfRecognition", "StopContinuousDtmfRecognition"
ALLOWED_NUMBER_PLACES = {"table callstate", "table callrecords", "container qa-recordings"}

FLOWS = {
    "payment": {
        "start": "welcome",
        "on_tone": {"*": "agent"},
        "nodes": {
            "welcome": {"type": "play", "prompt": {"text": "Welcome to Contoso payments."}, "next": "card"},
            "card": {
                "type": "collect_digits",
                "prompt": {"text": CARD_PROMPT},
                "max_digits": 19,
                "stop_keys": "#",
                "timeout_seconds": 300,
                "inter_digit_timeout_seconds": 60,
                "store_as": "card",
                "sensitive": True,
                "retries": 2,
                "next": "thanks",
                "on_failure": "agent",
            },
            "thanks": {"type": "play", "prompt": {"text": "Thank you, your payment is being processed."}},
            "agent": {"type": "hangup", "prompt": {"text": "Goodbye."}},
        },
    }
}
ROUTING = {"rules": [], "default": {"type": "answer", "flow": "payment"}}


@pytest.fixture(scope="module")
def payments(azurite: Any) -> Iterator[tuple[AppStack, SimulatorThread]]:
    thread = SimulatorThread(config=Config(recording_seconds=1.0))
    sim = thread.__enter__()
    try:
        app = start_app(
            sim, azurite.connection_string, routing=ROUTING, flows=FLOWS, LOG_LEVEL="DEBUG", RECORDING_MODE="on_connect"
        )
        try:
            yield AppStack(sim, app), thread
        finally:
            app.stop()
    finally:
        thread.__exit__(None, None, None)




def requests_of(stack: AppStack, scid: str) -> list[dict[str, Any]]:
    return [e for e in stack.entries(scid) if e["kind"] == "request"]


def card_recognize(stack: AppStack, scid: str) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in requests_of(stack, scid)
            if e["operation"] == "Recognize"
            and CARD_PROMPT in json.dumps(e.get("body"))
            and str((e.get("body") or {}).get("operationContext", "")).startswith("card#")
        ),
        None,
    )


def emit_tones(thread: SimulatorThread, stack: AppStack, ccid: str, keys: str) -> None:
    """Continuous-DTMF tone events for ``keys``, sent to the app as ACS sends them (signed, on the call's URL)."""
    engine = stack.sim.sim.engine

    async def send() -> None:
        conn = engine.connection(ccid)
        for key in keys:
            data = {
                "tone": TONE_NAMES[key],
                "sequenceId": next(conn.dtmf_sequence),
                "resultInformation": rc.info(rc.CONTINUOUS_DTMF_TONE),
            }
            engine.emit(conn, "ContinuousDtmfRecognitionToneReceived", data, context="continuous-dtmf")

    thread.call(send())


def run_the_call(stack: AppStack, thread: SimulatorThread) -> dict[str, Any]:
    """The call of the module docstring; what the test needs of it afterwards."""
    placed = stack.place(
        **{
            "from": CALLER,
            "to": LINE,
            # The caller answers the API's question (step 3); the card is keyed below, outside the script.
            "script": [{"on": "recognize", "match": "How can I help", "say": SENTENCE}],
        }
    )
    scid = placed["serverCallId"]
    ccid = stack.connection_id(scid)
    until(lambda: card_recognize(stack, scid), timeout=20, message=f"no card recognize:\n{stack.timeline(scid)}")
    time.sleep(0.2)  # the recognize listens
    delivered = "ContinuousDtmfRecognitionToneReceived -> 200"
    emit_tones(thread, stack, ccid, CARD)
    all_delivered = lambda: stack.timeline(scid).count(delivered) >= len(CARD)  # noqa: E731
    until(all_delivered, timeout=20, message="tone events not all delivered")
    stack.ctl("POST", f"/__sim/calls/{scid}/input", {"press": CARD + "#"})
    stack.wait_for(scid, "hears: Thank you, your payment is being processed.")
    status, asked = stack.app.call_api(
        "POST",
        f"calls/{ccid}/recognize",
        {"mode": "speech", "target": CALLER, "prompt": {"text": "How can I help you today?"}},
    )
    assert status == 202, asked

    def api_result() -> Any:
        status, view = stack.app.call_api("GET", f"calls/{ccid}")
        return status == 200 and view["app"]["outcome"].get("api", {}).get(asked["operation_context"])

    heard = until(api_result, timeout=20, message="no result for the API's recognize")
    stack.ctl("POST", f"/__sim/calls/{scid}/hangup", {"participant": CALLER_RAW})
    stack.wait_finished(scid)
    return {"scid": scid, "ccid": ccid, "heard": heard}


# -- the scan ---------------------------------------------------------------------------------------


def card_runs(length_from: int, length_to: int) -> set[str]:
    return {CARD[i : i + n] for n in range(length_from, length_to + 1) for i in range(len(CARD) - n + 1)}


LONG_RUNS = card_runs(8, len(CARD))
SHORT_RUNS = card_runs(4, 7)
# A standalone run of digits: not part of a word, an id, a time or a decimal number.
STANDALONE = re.compile(r"(?<![A-Za-z0-9.:,_/-])\d{4,7}(?![A-Za-z0-9.:,_/-])")
TONE_WORD = re.compile(r"\b(zero|one|two|three|four|five|six|seven|eight|nine|asterisk|pound)\b", re.IGNORECASE)
ABOUT_TONES = re.compile(r"\b(tones?|dtmf|pressed|keyed|digits?)\b", re.IGNORECASE)
QUOTED_TONE = re.compile(r"[\"'](zero|one|two|three|four|five|six|seven|eight|nine|asterisk|pound)[\"']")
CARD_AS_WORDS = re.compile(
    r"\b" + r"\W+".join(TONE_NAMES[d] for d in CARD[:4]) + r"\b|\bone\W+one\W+one\W+one\b", re.IGNORECASE
)
NUMBER_DIGITS = CALLER.lstrip("+")


def sensitive_content(text: str) -> list[str]:
    """What of the card or the sentence ``text`` holds (empty: nothing)."""
    found = []
    if CARD in text or any(run in text for run in LONG_RUNS):
        found.append("card digits")
    elif any(m.group(0) in SHORT_RUNS for m in STANDALONE.finditer(text)):
        found.append("a run of the card's digits")
    if CARD_AS_WORDS.search(text) or QUOTED_TONE.search(text):
        found.append("tones by name")
    if SENTENCE.lower() in text.lower() or any(w.lower() in text.lower() for w in SPEECH_WORDS):
        found.append("the caller's words")
    return found


def scan_logs(text: str) -> list[str]:
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        problems = sensitive_content(line)
        if ABOUT_TONES.search(line) and TONE_WORD.search(line):
            problems.append("a tone by name")
        if NUMBER_DIGITS in line or NUMBER_DIGITS[1:] in line:
            problems.append("the caller's full number")
        if problems:
            findings.append(f"log line {number} ({', '.join(sorted(set(problems)))}): {line[:300]}")
    return findings


def stored_items(connection_string: str) -> Iterator[tuple[str, str]]:
    """(place, text) for every row of every table, and every blob's name, metadata, tags (and JSON content)."""
    tables = TableServiceClient.from_connection_string(connection_string)
    for table in tables.list_tables():
        client = tables.get_table_client(table.name)
        for entity in client.list_entities():
            text = json.dumps(dict(entity), default=str, sort_keys=True)
            yield f"table {table.name}", f"{entity.get('PartitionKey')}/{entity.get('RowKey')}: {text}"
    blobs = BlobServiceClient.from_connection_string(connection_string)
    for container in blobs.list_containers(include_metadata=True):
        client = blobs.get_container_client(container.name)
        yield f"container {container.name}", json.dumps(container.metadata or {})
        for blob in client.list_blobs(include=["metadata", "tags"]):
            described = json.dumps({"name": blob.name, "metadata": blob.metadata, "tags": blob.tags}, default=str)
            yield f"container {container.name}", described
            if blob.name.endswith(".json") and (blob.size or 0) < 1_000_000:
                content = client.get_blob_client(blob.name).download_blob().readall().decode(errors="replace")
                yield f"container {container.name}", f"{blob.name}: {content}"


def scan_storage(connection_string: str) -> tuple[list[str], set[str]]:
    findings, number_places = [], set()
    for place, text in stored_items(connection_string):
        problems = sensitive_content(text)
        if problems:
            findings.append(f"{place} ({', '.join(problems)}): {text[:300]}")
        if NUMBER_DIGITS in text:
            number_places.add(place)
    return findings, number_places


def scan_timeline(stack: AppStack, scid: str) -> list[str]:
    """Continuous DTMF: stopped before the card's recognize, off until the digits were in, on again after."""
    entries = stack.entries(scid)
    recognize = next(
        i
        for i, e in enumerate(entries)
        if e["kind"] == "request"
        and e["operation"] == "Recognize"
        and str((e.get("body") or {}).get("operationContext", "")).startswith("card#")
    )
    # The caller keying the card (an event's own line comes after what the app did on it: not a landmark).
    keyed = next(
        (i for i, e in enumerate(entries) if e["kind"] == "party" and f"presses {CARD}" in e["summary"]), len(entries)
    )
    switches = [
        (i, e["operation"])
        for i, e in enumerate(entries)
        if e["kind"] == "request" and e["operation"] in (START_DTMF, STOP_DTMF)
    ]
    before = [op for i, op in switches if i < recognize]
    during = [op for i, op in switches if recognize < i < keyed]
    after = [op for i, op in switches if i > keyed]
    findings = []
    if not before or before[-1] != STOP_DTMF:
        findings.append(f"timeline: continuous DTMF not stopped before the sensitive recognize (before it: {before})")
    if START_DTMF in during:
        findings.append("timeline: continuous DTMF started again while the card was keyed")
    if START_DTMF not in after:
        findings.append("timeline: continuous DTMF not started again after the card's collection")
    return findings


def test_no_card_digit_tone_or_words_in_any_log_line_or_stored_row(
    payments: tuple[AppStack, SimulatorThread], azurite: Any
) -> None:
    stack, thread = payments
    call = run_the_call(stack, thread)
    scid = call["scid"]
    # The API's result carries the caller's words while the call lasts (what the API is for).
    assert call["heard"].get("speech") == SENTENCE, call["heard"]
    # The call's record (the flow outcome at CallDisconnected, the Event Grid events) and the recording's copy.
    stack.ctl("GET", "/__sim/idle?timeout=10")

    def written() -> bool:
        places = {place for place, text in stored_items(azurite.connection_string) if scid in text}
        copied = any(
            "chunk-000.wav" in text and '"verified": "true"' in text
            for place, text in stored_items(azurite.connection_string)
            if place == "container qa-recordings" and scid in text
        )
        return {"table callrecords", "table callstate"} <= places and copied

    until(written, timeout=40, message="the call's record or recording was never written")
    time.sleep(1.0)  # the per-participant copies and the last record folds

    findings = scan_logs(stack.app.logs())
    stored, number_places = scan_storage(azurite.connection_string)
    findings += stored
    findings += scan_timeline(stack, scid)
    misplaced = number_places - ALLOWED_NUMBER_PLACES
    if misplaced:
        findings.append(f"the caller's number is stored outside where the app needs it: {sorted(misplaced)}")

    # The card itself went where it should: the flow has it as a mask only, the call went on.
    state = next(
        json.loads(e["data"])
        for place, e in _state_rows(azurite.connection_string)
        if json.loads(e["data"]).get("server_call_id") == scid
    )
    assert state["vars"].get("card") == "*" * len(CARD), state["vars"]
    assert "tones" not in state["outcome"], state["outcome"]
    assert not findings, f"{len(findings)} finding(s):\n" + "\n".join(findings)
    assert f"+*******{CALLER[-4:]}" in stack.app.logs()  # the masked form is what the logs show


def _state_rows(connection_string: str) -> Iterator[tuple[str, dict[str, Any]]]:
    tables = TableServiceClient.from_connection_string(connection_string)
    for entity in tables.get_table_client("callstate").list_entities():
        if "data" in entity:
            yield "table callstate", dict(entity)
