"""Parser-differential attacks on the recording URLs: no ACS credential ever reaches a host off the allow-list.

Each attack is a RecordingFileStatusUpdated event whose contentLocation, metadataLocation or deleteLocation
is crafted so that a check and an HTTP client could read different hosts. The event goes through the app's
real path: ``handle_recording_file_status`` -> ``RecordingCopier`` -> the app's requests session (as
core/platform/clients.py makes it) with ACS's HMAC signature (access key) or an Entra token. The network is closed
(tests/security/attacker.py): ACS's recording store answers for ``*.asm.skype.com`` on 443 and for the
allowed loopback store, every other name, address or port is the attacker's TLS/HTTP server on 127.0.0.2,
which counts every connection, every request and every credential header. Blobs go to an in-memory account.

Every attack must be refused (the handler reports it and acknowledges the event: logged, never retried),
with zero connections to the attacker, no credential seen there, and no blob written.

The third field of each row is what the code before this change (f82571e) did with it, measured by running
this file against that commit's core/recording_copy.py:
- ``reached``: the attack worked: the attacker received the request, with the HMAC signature or the token;
- ``redirected``: the attack worked: the allowed store's redirect was followed to the attacker (requests drops
  the ``Authorization`` header on a change of host or port, but the request went, with ``x-ms-host``,
  ``x-ms-date`` and ``x-ms-content-sha256``);
- ``crashed``: not reached, but the check or the client raised instead of refusing (Event Grid retries 30x);
- ``fetched-legit``: the request went to ACS's store after all (a URL the new check refuses as non-canonical);
- ``refused``: already refused.
A row marked ``reached``, ``redirected`` or ``crashed`` is a test that fails on f82571e ("worked before
f82571e"), in every slot and with either credential unless noted otherwise in the measurement (the outcome
shown is the contentLocation slot's with the HMAC signature).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from core.recordings import download
from core.recordings.auth import RecordingAuth
from core.recordings.copier import RecordingCopier
from core.recordings.urls import HostAllowList
from handlers.recordings import handle_recording_file_status
from tests.security.attacker import (
    Account,
    Endpoint,
    app_session,
    closed_network,
    make_certificates,
    services_for,
)
from tests.security.attacker import recording_event as make_event

ALLOWED = ["*.asm.skype.com", "127.0.0.1"]  # ACS's recording hosts, and the loopback store as the simulator runs
RESOURCE = "https://contoso.communication.azure.com"
ACCESS_KEY = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="


class Attack(NamedTuple):
    name: str
    url: str  # {A}: the attacker's port (127.0.0.2), {L}: the allowed store's port (127.0.0.1), {tail}: per slot
    before: str  # what f82571e did: reached, redirected, crashed, fetched-legit, refused


P = "/v1/objects/a{tail}"  # the path ACS's URLs have; {tail}: /content/audio, /content/acsmetadata or nothing

# Redirects answered by the ALLOWED store (127.0.0.1:{L}): key -> (status, Location).
REDIRECTS = {
    "302-ip": (302, "https://127.0.0.2:{A}/v1/objects/a/content/audio"),
    "301-name": (301, "https://attacker.example/v1/objects/a/content/audio"),
    "307-http": (307, "http://127.0.0.2:{A}/v1/objects/a"),
    "308-port": (308, "https://eu.asm.skype.com:{A}/v1/objects/a"),
    "303-name": (303, "https://eu.asm.skype.com.attacker.example/x"),
    "302-relative": (302, "//attacker.example/v1/objects/a"),
    "302-backslash": (302, "https://attacker.example\\@eu.asm.skype.com/v1/objects/a"),
    "302-same-host-other-port": (302, "https://127.0.0.1:{A}/v1/objects/a"),
}

ATTACKS: list[Attack] = [
    # -- authority confusion: backslash and userinfo
    Attack("issue-example", "https://attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("backslash-at-ip-port", "https://127.0.0.2:{A}\\@eu.asm.skype.com" + P, "reached"),
    Attack("double-backslash-at", "https://attacker.example\\\\@eu.asm.skype.com" + P, "reached"),
    Attack("backslash-no-at", "https://attacker.example\\eu.asm.skype.com" + P, "reached"),
    Attack("backslash-dot-suffix", "https://attacker.example\\.asm.skype.com" + P, "reached"),
    Attack("backslash-at-port-443", "https://attacker.example:443\\@eu.asm.skype.com" + P, "reached"),
    Attack("userinfo-then-backslash", "https://x:y@attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("backslash-slash-at", "https://attacker.example\\/@eu.asm.skype.com" + P, "refused"),
    Attack("backslash-at-allowed-loopback", "https://attacker.example\\@127.0.0.1:{L}" + P, "reached"),
    Attack("backslash-port-then-allowed", "https://eu.asm.skype.com:{A}\\@eu.asm.skype.com" + P, "reached"),
    Attack("uppercase-backslash", "https://ATTACKER.EXAMPLE\\@EU.ASM.SKYPE.COM" + P, "reached"),
    Attack("ipv6-backslash-at", "https://[::ffff:7f00:2]:{A}\\@eu.asm.skype.com" + P, "reached"),
    Attack("slash-backslash-at", "https://attacker.example/\\@eu.asm.skype.com" + P, "refused"),
    Attack("backslash-question-at", "https://attacker.example\\?@eu.asm.skype.com" + P, "refused"),
    Attack("backslash-hash-at", "https://attacker.example\\#@eu.asm.skype.com" + P, "refused"),
    Attack("encoded-backslash-at", "https://attacker.example%5c@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("userinfo-host-is-attacker", "https://eu.asm.skype.com@attacker.example" + P, "refused"),
    Attack("userinfo-ip-is-attacker", "https://eu.asm.skype.com:443@127.0.0.2:{A}" + P, "refused"),
    Attack("userinfo-empty-user", "https://@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("userinfo-empty-password", "https://user:@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("userinfo-attacker-as-user", "https://127.0.0.2:{A}@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("double-at", "https://a@attacker.example@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("at-in-path", "https://eu.asm.skype.com/v1/objects/a@127.0.0.2:{A}{tail}", "fetched-legit"),
    Attack("semicolon-at", "https://attacker.example;@eu.asm.skype.com" + P, "fetched-legit"),
    # -- query and fragment confusion
    Attack("question-at", "https://attacker.example?@eu.asm.skype.com" + P, "refused"),
    Attack("hash-at", "https://127.0.0.2:{A}#@eu.asm.skype.com" + P, "refused"),
    Attack("hash-suffix", "https://127.0.0.2:{A}#.asm.skype.com" + P, "refused"),
    Attack("question-suffix", "https://127.0.0.2:{A}?.asm.skype.com" + P, "refused"),
    Attack("query-with-at", "https://eu.asm.skype.com" + P + "?x=@127.0.0.2:{A}", "fetched-legit"),
    Attack("fragment-on-legit", "https://eu.asm.skype.com" + P + "#frag", "fetched-legit"),
    # -- percent-encoding and odd characters in the host
    Attack("encoded-dot-host", "https://eu.asm.skype%2ecom" + P, "refused"),
    Attack("encoded-colon-port-host", "https://127.0.0.2%3a{A}%5c.asm.skype.com" + P, "crashed"),
    Attack("encoded-slash-host", "https://attacker.example%2f.asm.skype.com" + P, "crashed"),
    Attack("encoded-at-host", "https://attacker.example%40eu.asm.skype.com" + P, "crashed"),
    Attack("nul-in-host", "https://attacker.example\x00.asm.skype.com" + P, "crashed"),
    Attack("space-in-host", "https://attacker.example .asm.skype.com" + P, "crashed"),
    Attack("underscore-host", "https://attacker_example.asm.skype.com" + P, "fetched-legit"),
    Attack("uppercase-host", "https://EU.ASM.SKYPE.COM" + P, "fetched-legit"),
    # -- unicode: dots, fullwidth, IDNA
    Attack("ideographic-dots", "https://eu\u3002asm\u3002skype\u3002com" + P, "refused"),
    Attack("fullwidth-dot-suffix", "https://attacker.example\uff0easm.skype.com" + P, "refused"),
    Attack("fullwidth-solidus-at", "https://attacker.example\uff0f@eu.asm.skype.com" + P, "crashed"),
    Attack("fullwidth-backslash-at", "https://attacker.example\uff3c@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("fullwidth-at", "https://attacker.example\uff20eu.asm.skype.com" + P, "crashed"),
    Attack("fullwidth-host", "https://\uff45\uff55.asm.skype.com" + P, "crashed"),
    Attack("cyrillic-lookalike", "https://eu.asm.sk\u0443pe.com" + P, "refused"),
    Attack("punycode-label", "https://xn--eu-asm-skype-com.attacker.example" + P, "refused"),
    Attack("punycode-under-suffix", "https://xn--80ak6aa92e.asm.skype.com" + P, "fetched-legit"),
    Attack("rtl-override", "https://attacker.example\u202e.asm.skype.com" + P, "crashed"),
    # -- suffix tricks and trailing dots
    Attack("suffix-then-attacker", "https://eu.asm.skype.com.attacker.example" + P, "refused"),
    Attack("nip-io-style", "https://eu.asm.skype.com.127.0.0.2.nip.io" + P, "refused"),
    Attack("trailing-dot", "https://eu.asm.skype.com." + P, "refused"),
    Attack("bare-suffix", "https://asm.skype.com" + P, "refused"),
    Attack("glued-suffix", "https://evilasm.skype.com" + P, "refused"),
    # -- ports
    Attack("other-port-on-allowed-host", "https://eu.asm.skype.com:{A}" + P, "reached"),
    Attack("port-80-on-allowed-host", "https://eu.asm.skype.com:80" + P, "reached"),
    Attack("port-8443-on-allowed-host", "https://eu.asm.skype.com:8443" + P, "reached"),
    Attack("port-zero-padded", "https://eu.asm.skype.com:0443" + P, "fetched-legit"),
    Attack("port-empty", "https://eu.asm.skype.com:" + P, "fetched-legit"),
    Attack("port-out-of-range", "https://eu.asm.skype.com:65979" + P, "crashed"),
    Attack("port-signed", "https://eu.asm.skype.com:+443" + P, "crashed"),
    Attack("port-zero", "https://eu.asm.skype.com:0" + P, "fetched-legit"),
    # -- schemes
    Attack("http-downgrade", "http://eu.asm.skype.com" + P, "refused"),
    Attack("http-loopback-backslash", "http://127.0.0.2:{A}\\@127.0.0.1" + P, "reached"),
    Attack("http-other-loopback-address", "http://127.0.0.2:{A}" + P, "refused"),
    Attack("uppercase-scheme-backslash", "HTTPS://attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("uppercase-scheme", "HTTPS://eu.asm.skype.com" + P, "fetched-legit"),
    Attack("scheme-relative", "//eu.asm.skype.com" + P, "refused"),
    Attack("one-slash", "https:/eu.asm.skype.com" + P, "refused"),
    Attack("backslash-scheme-separator", "https:\\\\attacker.example\\@eu.asm.skype.com" + P, "refused"),
    Attack("ftp", "ftp://eu.asm.skype.com" + P, "refused"),
    Attack("no-scheme", "eu.asm.skype.com" + P, "refused"),
    # -- IP address spellings and IPv6
    Attack("ipv4-mapped-ipv6", "https://[::ffff:127.0.0.2]:{A}" + P, "refused"),
    Attack("ipv6-loopback-not-listed", "https://[::1]:{A}" + P, "refused"),
    Attack("ipv6-zone-id", "https://[::1%25lo]:{A}" + P, "refused"),
    Attack("decimal-ip", "https://2130706434:{A}" + P, "refused"),
    Attack("hex-ip", "https://0x7f.0.0.2:{A}" + P, "refused"),
    Attack("short-ip", "https://127.2:{A}" + P, "refused"),
    Attack("zero-padded-loopback", "https://127.000.000.001:{A}" + P, "refused"),
    Attack("loopback-trailing-dot", "https://127.0.0.1.:{A}" + P, "refused"),
    # -- whitespace and control characters
    Attack("leading-space-backslash", " https://attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("leading-vertical-tab", "\x0bhttps://attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("leading-unit-separator", "\x1fhttps://attacker.example\\@eu.asm.skype.com" + P, "reached"),
    Attack("trailing-form-feed", "https://attacker.example\\@eu.asm.skype.com" + P + "\x0c", "reached"),
    Attack("tab-in-scheme", "ht\ttps://attacker.example\\@eu.asm.skype.com" + P, "crashed"),
    Attack("tab-before-at", "https://attacker.example\t@eu.asm.skype.com" + P, "fetched-legit"),
    Attack("newline-in-host", "https://attacker.example\n.asm.skype.com" + P, "crashed"),
    Attack("crlf-header-injection", "https://eu.asm.skype.com" + P + "\r\nX-Injected: 1", "fetched-legit"),
    Attack("trailing-newline", "https://eu.asm.skype.com" + P + "\n", "fetched-legit"),
    # -- paths (the host is right; the path would be sent otherwise than signed or checked)
    Attack("dot-segments", "https://eu.asm.skype.com/v1/objects/a/../b{tail}", "fetched-legit"),
    Attack("encoded-path", "https://eu.asm.skype.com/v1/objects/a%2f..%2fb{tail}", "fetched-legit"),
    Attack("empty-segment", "https://eu.asm.skype.com/v1//objects/a{tail}", "fetched-legit"),
    Attack("non-ascii-path", "https://eu.asm.skype.com/v1/objects/\u00e4{tail}", "fetched-legit"),
    # -- not a URL at all
    Attack("whitespace-only", " ", "refused"),
    Attack("garbage", "::::", "refused"),
    Attack("very-long", "https://eu.asm.skype.com/" + "a" * 5000 + "{tail}", "fetched-legit"),
] + [
    Attack(f"redirect-{key}", "https://127.0.0.1:{L}/v1/objects/redirect-" + key + "{tail}",
           "fetched-legit" if key == "302-backslash" else "redirected")
    for key in REDIRECTS
]

TAILS = {"contentLocation": "/content/audio", "metadataLocation": "/content/acsmetadata", "deleteLocation": ""}


@dataclass
class Net:
    ca: Path
    store: Endpoint
    attacker: Endpoint

    def fill(self, template: str, slot: str = "contentLocation") -> str:
        return template.replace("{A}", str(self.attacker.port)).replace("{L}", str(self.store.port)).replace(
            "{tail}", TAILS[slot]
        )

    def legit(self, slot: str) -> str:
        return f"https://127.0.0.1:{self.store.port}/v1/objects/doc-1{TAILS[slot]}"


def _hosts_in(urls: list[str]) -> set[str]:
    """Every host name a URL of the table could be read as: the attacker holds a certificate for each."""
    from urllib.parse import urlsplit

    from urllib3.util import parse_url

    names: set[str] = {"attacker.example", "eu.asm.skype.com.attacker.example"}
    for url in urls:
        for read in (lambda u: parse_url(u).host, lambda u: urlsplit(u).hostname):
            try:
                host = read(url)
            except Exception:
                continue
            if host and host.isascii() and not host.startswith("["):
                names.add(host.rstrip("."))
    return names


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    urls = [a.url.replace("{A}", "1").replace("{L}", "1").replace("{tail}", "") for a in ATTACKS]
    ca, context = make_certificates(tmp_path_factory.mktemp("tls"), _hosts_in(urls))
    store = Endpoint("store", "127.0.0.1", context).start()
    attacker = Endpoint("attacker", "127.0.0.2", context).start()
    net = Net(ca, store, attacker)
    try:
        yield net
    finally:
        store.stop()
        attacker.stop()


class _NoSleep:
    """The download's view of ``time`` without its back-off pauses (an attack that fails to connect is retried)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


@pytest.fixture
def net(hosts: Net, monkeypatch: pytest.MonkeyPatch) -> Net:
    hosts.store.reset()
    hosts.attacker.reset()
    for key, (status, location) in REDIRECTS.items():
        hosts.store.redirects[key] = (status, hosts.fill(location))
    closed_network(monkeypatch, hosts.store, hosts.attacker)
    monkeypatch.setattr(download, "time", _NoSleep())
    return hosts


class Credential:
    def get_token(self, scope: str) -> Any:
        return type("Token", (), {"token": "entra-token-of-the-app"})()


def run(net: Net, slot: str, url: Any, *, auth: str = "hmac", allowed: list[str] | None = None) -> tuple[Any, Account]:
    """One event through the app's handler; returns (the report, or the exception raised) and the account."""
    urls = {s: net.legit(s) for s in TAILS}
    urls[slot] = url
    event = make_event(content=urls["contentLocation"], metadata=urls["metadataLocation"],
                       delete=urls["deleteLocation"])
    account = Account()
    credentials = RecordingAuth(RESOURCE, ACCESS_KEY if auth == "hmac" else None, credential=Credential())
    copier = RecordingCopier(
        container=account.container("qa-recordings"),
        session=app_session(net.ca),
        auth=credentials,
        allow=HostAllowList(allowed or ALLOWED),
        delete_after_copy=True,
    )
    try:
        outcome: Any = handle_recording_file_status(event, services_for(copier))
    except Exception as exc:  # a crash is not a refusal: Event Grid would redeliver it 30 times
        outcome = exc
    return outcome, account


def assert_refused_and_nothing_reached(net: Net, outcome: Any, account: Account, *, writes: bool = False) -> None:
    seen = [(s.method, s.path, s.tls, sorted(s.credentials)) for s in net.attacker.seen]
    assert net.attacker.connections == 0, f"the attacker was reached: {seen}"
    assert net.attacker.seen == [] and net.attacker.credentials == []
    assert not isinstance(outcome, Exception), f"raised instead of refusing: {outcome!r}"
    assert outcome.refused, f"not refused: {outcome}"
    if not writes:
        assert account.writes == [], f"blobs written: {account.writes}"


def test_the_table_is_large_enough_and_says_what_worked_before():
    assert len(ATTACKS) >= 60
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)
    assert {a.before for a in ATTACKS} <= {"reached", "redirected", "crashed", "fetched-legit", "refused"}


@pytest.mark.parametrize("slot", list(TAILS))
@pytest.mark.parametrize(("name", "template", "before"), ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_refused_and_nothing_reaches_the_attacker(net, slot, name, template, before):
    """Worked before f82571e for every row marked ``reached`` (the attacker got the signed request) or
    ``redirected`` (a redirect followed to the attacker), and failed there for every row marked ``crashed``
    (an exception, redelivered by Event Grid, instead of a refusal); see the module docstring."""
    redirect_after_copy = name.startswith("redirect-") and slot == "deleteLocation"
    outcome, account = run(net, slot, net.fill(template, slot))
    # A redirect answered to the DELETE comes after a verified copy from the allowed store: that copy stays.
    assert_refused_and_nothing_reached(net, outcome, account, writes=redirect_after_copy)
    if redirect_after_copy:
        assert {w[1] for w in account.writes} == {"qa-recordings"}
        assert net.store.seen[-1].method == "DELETE"  # sent once, to the allowed store; its redirect not followed


@pytest.mark.parametrize(("name", "template", "before"), ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_with_the_entra_token_is_refused_too(net, name, template, before):
    """Managed identity: the app's Entra token for ACS must not leave either. Worked before f82571e for the
    rows marked ``reached`` (the token itself) and ``redirected``."""
    outcome, account = run(net, "contentLocation", net.fill(template), auth="entra")
    assert_refused_and_nothing_reached(net, outcome, account)


@pytest.mark.parametrize("slot", ["contentLocation", "metadataLocation"])
def test_empty_and_non_string_locations_are_refused_not_crashed(net, slot):
    """Worked before f82571e: an empty location, a number or an object raised (AttributeError/TypeError, or
    requests' MissingSchema) instead of being refused."""
    for value in ("", 5, ["https://eu.asm.skype.com/v1/objects/a/content/audio"], {"url": "x"}, True):
        outcome, account = run(net, slot, value)
        assert_refused_and_nothing_reached(net, outcome, account)


# -- the harness itself: what is allowed still works, so the refusals above are the check's doing ----------------


@pytest.mark.parametrize("auth", ["hmac", "entra"])
def test_an_allowed_recording_is_copied_with_credentials_sent_only_to_the_store(net, auth):
    outcome, account = run(net, "contentLocation", "https://eu.asm.skype.com/v1/objects/doc-1/content/audio",
                           auth=auth)
    assert not isinstance(outcome, Exception) and outcome.refused is None, outcome
    assert [c.blob for c in outcome.chunks] == ["2024/05/01/server-call-1/doc-1/chunk-000.wav"]
    assert net.attacker.connections == 0
    methods = sorted(s.method for s in net.store.seen)
    assert methods == ["DELETE", "GET", "GET"]
    assert all(s.credentials.get("Authorization") for s in net.store.seen)


def test_the_attacker_really_answers_what_gets_past_a_check(net):
    """The harness: a request that reaches the attacker completes (TLS trusted, credentials seen)."""
    session = app_session(net.ca)
    response = session.get(f"https://127.0.0.2:{net.attacker.port}/v1/objects/a/content/audio",
                           headers={"Authorization": "HMAC-SHA256 x"}, timeout=10)
    assert response.status_code == 200
    response = session.get("https://attacker.example/v1/objects/a/content/acsmetadata", timeout=10)
    assert response.json()["participants"]
    assert net.attacker.connections == 2 and net.attacker.credentials == [{"Authorization": "HMAC-SHA256 x"}]


def test_a_loopback_pattern_with_a_port_allows_that_port_only(net):
    allow = HostAllowList(["*.asm.skype.com", f"127.0.0.1:{net.store.port}"])
    assert allow.allows(f"https://127.0.0.1:{net.store.port}/v1/objects/a/content/audio")
    assert not allow.allows(f"https://127.0.0.1:{net.attacker.port}/v1/objects/a/content/audio")
    outcome, account = run(net, "contentLocation", f"https://127.0.0.1:{net.attacker.port}/v1/objects/a/content/audio",
                           allowed=["*.asm.skype.com", f"127.0.0.1:{net.store.port}"])
    assert_refused_and_nothing_reached(net, outcome, account)


def test_the_checked_url_is_the_url_sent():
    """The check's answer is rebuilt from the parts it checked, and requests sends it unchanged."""
    from requests.models import PreparedRequest

    allow = HostAllowList(ALLOWED)
    for url in ("https://eu.asm.skype.com/v1/objects/a/content/audio", "http://127.0.0.1:8090/v1/objects/a",
                "https://eu.asm.skype.com:443/v1/objects/a?x=1&y=2"):
        safe = allow.check(url)
        prepared = PreparedRequest()
        prepared.prepare_url(safe.url, None)
        assert safe.url == url == prepared.url


def test_default_hosts_do_not_include_loopback():
    """With ACS's own hosts (the default setting), the simulator's loopback URLs are refused."""
    from core.platform.settings import DEFAULT_RECORDING_HOSTS

    allow = HostAllowList([h for h in DEFAULT_RECORDING_HOSTS.split(",")])
    assert allow.allows("https://westus-storage.asm.skype.com/v1/objects/a/content/audio")
    for url in ("http://127.0.0.1:8090/v1/objects/a", "https://localhost/v1/objects/a", "https://[::1]/v1/objects/a"):
        assert not allow.allows(url)


# -- end to end: the app in its own process, under the local Functions host, with the simulator and Azurite ------


def test_end_to_end_a_forged_event_sends_nothing_to_the_attacker(hosts, azurite):
    """Worked before f82571e: a forged RecordingFileStatusUpdated posted to the app's Event Grid webhook made
    the app send ACS's HMAC-signed GET to 127.0.0.2 (``http://127.0.0.2:PORT\\@127.0.0.1:SIM/…`` passed the
    check as 127.0.0.1, the simulator's allowed loopback host, and requests connected to 127.0.0.2). Now the
    event is refused, logged and acknowledged (202: no redelivery), and nothing is written."""
    import json
    import urllib.request
    import uuid
    from datetime import UTC, datetime
    from urllib.parse import urlsplit

    from azure.storage.blob import BlobServiceClient

    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools.apphost import start_app

    attacker = hosts.attacker
    attacker.reset()
    container = f"qa-sec-{uuid.uuid4().hex[:8]}"
    with SimulatorThread(config=Config()) as sim:
        app = start_app(sim, azurite.connection_string, subscribe=False, RECORDINGS_CONTAINER=container)
        try:
            forged = f"http://127.0.0.2:{attacker.port}\\@127.0.0.1:{urlsplit(sim.endpoint).port}/v1/objects/forged"
            event = {
                "id": f"forged-{uuid.uuid4().hex}",
                "topic": sim.sim.config.resource_id,
                "subject": "/recording/call/corr-1/serverCallId/forged-call",
                "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
                "eventTime": datetime.now(UTC).isoformat(),
                "dataVersion": "1.0",
                "metadataVersion": "1",
                "data": {
                    "recordingStorageInfo": {"recordingChunks": [{
                        "documentId": "forged", "index": 0, "endReason": "SessionEnded",
                        "contentLocation": forged + "/content/audio",
                        "metadataLocation": forged + "/content/acsmetadata",
                        "deleteLocation": forged,
                    }]},
                    "recordingStartTime": "2024-05-01T10:00:00Z",
                    "recordingDurationMs": 1000,
                    "recordingContentType": "Audio",
                    "recordingChannelType": "Mixed",
                    "recordingFormatType": "Wav",
                },
            }
            request = urllib.request.Request(
                app.eventgrid_url("recording_file_status"), data=json.dumps([event]).encode(), method="POST",
                headers={"Content-Type": "application/json", "aeg-event-type": "Notification"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            deadline = time.monotonic() + 10
            while "refused" not in app.logs() and time.monotonic() < deadline:
                time.sleep(0.1)
            logs = app.logs()
        finally:
            app.stop()
    assert attacker.connections == 0 and attacker.credentials == [], [s.credentials for s in attacker.seen]
    assert status in (200, 202), status  # acknowledged: Event Grid does not redeliver it
    assert f"recording event {event['id']} refused" in logs
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    assert not blobs.exists() or list(blobs.list_blobs()) == []
