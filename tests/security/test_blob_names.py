"""Traversal and odd names in every event field that reaches a blob name: nothing is written outside the
recording's own place in the QA container, and the Function App's deployment package is never touched.

Fields: the serverCallId in the subject, documentId, the recording id kept in the call's state, index,
recordingFormatType (the extension), recordingChannelType, recordingStartTime (the date folder), the
participant ids of the recording's metadata (the per-participant files), and, with bring-your-own-storage,
contentLocation and metadataLocation (the blob names themselves). Each goes through the app's handler and
copier into an in-memory account that resolves names as the SDK, requests and the service do
(tests/security/attacker.py): a name with ``..`` segments lands where the real service would put it.
Two attacks also run against Azurite with the real SDK.

Each row says what the code before this change (f82571e) did with it, measured by running this file against
that commit's core/recording_copy.py:
- ``package``: the attack worked: the deployment package (another container) was overwritten, or its metadata
  and tags replaced;
- ``read-outside``: the attack worked: a blob of another container was read (as the recording's metadata);
- ``escaped``: the attack worked: a blob was written outside the recording's folder (still in the container);
- ``odd-name``: the attack worked: a blob was written with an extension outside wav/mp3/mp4, or a backslash,
  a percent sign, a NUL or non-ASCII in its name;
- ``crashed``: an exception instead of a refusal (Event Grid redelivers it 30 times);
- ``safe``: already safe (the name was made safe, or the URL refused); the test passes there too, or differs
  only in the name chosen (``...`` and an out-of-range index are now refused or renamed).
A row marked anything but ``safe`` is a test that fails on f82571e ("worked before f82571e").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

from core.recordings.auth import RecordingAuth
from core.recordings.copier import RecordingCopier
from core.recordings.urls import HostAllowList
from handlers.recordings import handle_recording_file_status
from tests.security.attacker import (
    CALLER,
    PACKAGE,
    WAV,
    Account,
    Endpoint,
    NoState,
    app_session,
    make_certificates,
    recording_event,
    services_for,
)

RESOURCE = "https://contoso.communication.azure.com"
ACCESS_KEY = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="
DAY = "2024/05/01/"
UP7 = "../" * 7  # from 2024/05/01/{call}/{recording}/chunk-000.wav to the account's root
PACKAGE_BYTES = b"PK\x03\x04 the Function App's deployment package"


@dataclass
class Store:
    endpoint: Endpoint
    ca: Any

    def url(self, tail: str) -> str:
        return f"http://127.0.0.1:{self.endpoint.port}/v1/objects/doc-1{tail}"


@pytest.fixture(scope="module")
def store_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    ca, context = make_certificates(tmp_path_factory.mktemp("tls"), set())
    endpoint = Endpoint("store", "127.0.0.1", context).start()
    try:
        yield Store(endpoint, ca)
    finally:
        endpoint.stop()


@pytest.fixture
def store(store_host: Store) -> Store:
    store_host.endpoint.reset()
    return store_host


def new_account() -> Account:
    account = Account()
    account.put(*PACKAGE, PACKAGE_BYTES, {"kind": "package"})
    account.put("scm-releases", "secrets.json", b'{"participants": []}')
    return account


def copier_for(account: Account, store: Store) -> RecordingCopier:
    return RecordingCopier(
        container=account.container("qa-recordings"),
        session=app_session(store.ca),
        auth=RecordingAuth(RESOURCE, ACCESS_KEY),
        allow=HostAllowList(["127.0.0.1"]),
    )


def handle(status: Any, copier: Any, state: Any = None, *, in_place: bool = False) -> Any:
    try:
        return handle_recording_file_status(status, services_for(copier, state, in_place=in_place))
    except Exception as exc:  # a crash is not a refusal: Event Grid would redeliver it 30 times
        return exc


def odd_segment(name: str) -> bool:
    import re

    return any(s in ("", ".", "..") or not re.fullmatch(r"[A-Za-z0-9._~=+,:-]+", s) for s in name.split("/"))


def assert_package_untouched(account: Account) -> None:
    package = account.blobs[PACKAGE]
    assert (package.data, package.metadata, package.tags) == (PACKAGE_BYTES, {"kind": "package"}, {})
    outside = [w for w in account.writes if w[1] != "qa-recordings"]
    assert outside == [], f"written outside the QA container: {outside}"
    read_outside = [r for r in account.reads if r[1] != "qa-recordings"]
    assert read_outside == [], f"read outside the QA container: {read_outside}"


# -- copy mode: names built from the event's fields -------------------------------------------------------------


class Case(NamedTuple):
    name: str
    fields: dict[str, Any]  # recording_event(...) arguments; "state_recording_id": the call state's recording id
    expect: str | None  # the chunk's blob name, or None: refused
    before: str  # what f82571e did: package, escaped, odd-name, crashed, safe


COPY_CASES: list[Case] = [
    Case("call-id-dotdot", {"server_call_id": ".."}, DAY + "__/doc-1/chunk-000.wav", "escaped"),
    Case("call-id-dot", {"server_call_id": "."}, DAY + "_/doc-1/chunk-000.wav", "escaped"),
    Case("call-id-encoded-dotdot", {"server_call_id": "%2e%2e"}, DAY + "_2e_2e/doc-1/chunk-000.wav", "safe"),
    Case("call-id-double-encoded", {"server_call_id": "%252e%252e"}, DAY + "_252e_252e/doc-1/chunk-000.wav", "safe"),
    Case("call-id-backslash", {"server_call_id": "..\\..\\x"}, DAY + ".._.._x/doc-1/chunk-000.wav", "safe"),
    Case("call-id-unicode-dots", {"server_call_id": "\u2024\u2024"}, DAY + "_/doc-1/chunk-000.wav", "safe"),
    Case("call-id-fullwidth", {"server_call_id": "\uff0e\uff0e"}, DAY + "_/doc-1/chunk-000.wav", "safe"),
    Case("document-id-dotdot", {"document_id": ".."}, DAY + "server-call-1/__/chunk-000.wav", "escaped"),
    Case("document-id-three-dots", {"document_id": "..."}, DAY + "server-call-1/___/chunk-000.wav", "safe"),
    Case("document-id-slashes", {"document_id": "../../../../../" + PACKAGE[0]},
         DAY + "server-call-1/.._.._.._.._.._scm-releases/chunk-000.wav", "safe"),
    Case("document-id-empty", {"document_id": ""}, DAY + "server-call-1/recording/chunk-000.wav", "safe"),
    Case("state-recording-id-dotdot", {"state_recording_id": ".."}, DAY + "server-call-1/__/chunk-000.wav",
         "escaped"),
    Case("both-ids-dotdot", {"server_call_id": "..", "document_id": ".."}, DAY + "__/__/chunk-000.wav", "escaped"),
    Case("index-negative", {"index": -1}, None, "safe"),
    Case("index-huge", {"index": 10**40}, None, "safe"),
    Case("index-text", {"index": "1/../../x"}, None, "crashed"),
    Case("format-traversal-to-package", {"format_type": "wav/" + UP7 + "/".join(PACKAGE)}, None, "package"),
    Case("format-traversal-in-container", {"format_type": "wav/../../../x"}, None, "escaped"),
    Case("format-backslash", {"format_type": "wav\\..\\..\\x"}, None, "odd-name"),
    Case("format-encoded-slash", {"format_type": "wav%2f..%2f..%2fx"}, None, "odd-name"),
    Case("format-unknown", {"format_type": "exe"}, None, "odd-name"),
    Case("format-fullwidth", {"format_type": "\uff57\uff41\uff56"}, None, "odd-name"),
    Case("format-nul", {"format_type": "wav\x00"}, None, "odd-name"),
    Case("format-trailing-dots", {"format_type": "wav.."}, None, "odd-name"),
    Case("format-not-a-string", {"format_type": 5}, None, "crashed"),
    Case("format-uppercase", {"format_type": "WAV"}, DAY + "server-call-1/doc-1/chunk-000.wav", "safe"),
    Case("format-mp3", {"format_type": "Mp3"}, DAY + "server-call-1/doc-1/chunk-000.mp3", "safe"),
    Case("format-absent", {"format_type": None}, DAY + "server-call-1/doc-1/chunk-000.wav", "safe"),
    Case("start-time-with-path", {"start_time": "2024-05-01T00:00:00/../../x"}, None, "crashed"),
    Case("start-time-not-a-string", {"start_time": 12345}, None, "crashed"),
    Case("start-time-garbage", {"start_time": "../../../"}, None, "crashed"),
    Case("channel-type-traversal", {"channel_type": "../../x"}, DAY + "server-call-1/doc-1/chunk-000.wav", "safe"),
    Case("channel-type-not-a-string", {"channel_type": 5}, DAY + "server-call-1/doc-1/chunk-000.wav", "crashed"),
]


@pytest.mark.parametrize(("name", "fields", "expect", "before"), COPY_CASES, ids=[c.name for c in COPY_CASES])
def test_event_fields_make_only_safe_names_inside_the_recordings_folder(store, name, fields, expect, before):
    """Worked before f82571e for the rows marked ``package`` (the deployment package overwritten with the
    recording), ``escaped`` (a blob outside the recording's folder) and ``odd-name``; failed there for the
    rows marked ``crashed``."""
    fields = dict(fields)
    state = NoState(fields.pop("state_recording_id", ""))
    account = new_account()
    status = recording_event(content=store.url("/content/audio"), metadata=store.url("/content/acsmetadata"),
                             **fields)
    outcome = handle(status, copier_for(account, store), state)
    assert not isinstance(outcome, Exception), f"raised instead of refusing: {outcome!r}"
    assert_package_untouched(account)
    if expect is None:
        assert outcome.refused, outcome
        assert account.writes == []
        assert store.endpoint.seen == []  # refused before anything was fetched
        return
    assert outcome.refused is None and [c.blob for c in outcome.chunks] == [expect]
    landed = {w[2] for w in account.writes}
    stem = expect.rsplit(".", 1)[0]
    assert landed == {expect, stem + ".metadata.json"}, landed
    assert not any(odd_segment(n) for n in landed)


def test_participant_ids_make_single_safe_file_names(store):
    """The per-participant files are named by the participant ids of the recording's metadata."""
    store.endpoint.metadata = {"participants": [{"participantId": "../../../../" + "/".join(PACKAGE), "channel": 0},
                                                {"participantId": "..", "channel": 1}]}
    account = new_account()
    status = recording_event(content=store.url("/content/audio"), metadata=store.url("/content/acsmetadata"),
                             channel_type="Unmixed")
    outcome = handle(status, copier_for(account, store))
    assert not isinstance(outcome, Exception) and outcome.refused is None, outcome
    assert_package_untouched(account)
    landed = {w[2] for w in account.writes}
    assert all(n.startswith(DAY + "server-call-1/doc-1/") and not odd_segment(n) for n in landed), landed
    assert DAY + "server-call-1/doc-1/chunk-000/participants/ch0-participant-.._.._.._.._scm-releases_scm-latest-" \
        "app.zip.wav" in landed


# -- bring your own storage: the blob names are the event's URLs ---------------------------------------------------

BYOS_FOLDER = "20240501/corr-1/rec-1"
CONTAINER_URL = "https://qaacct.blob.core.windows.net/qa-recordings"
LEGIT = f"{CONTAINER_URL}/{BYOS_FOLDER}/doc-1"
BACKSLASHED = "\\".join(PACKAGE)


class ByosCase(NamedTuple):
    name: str
    slot: str  # content or metadata
    url: str
    before: str


BYOS_CASES: list[ByosCase] = [
    ByosCase("encoded-dotdot-to-package", "content", f"{CONTAINER_URL}/%2e%2e/{'/'.join(PACKAGE)}", "package"),
    ByosCase("encoded-upper-dotdot", "content", f"{CONTAINER_URL}/%2E%2E/{'/'.join(PACKAGE)}", "package"),
    ByosCase("dotdot-encoded-slashes", "content", f"{CONTAINER_URL}/..%2f{'%2f'.join(PACKAGE)}", "package"),
    ByosCase("all-encoded", "content", f"{CONTAINER_URL}/%2e%2e%2f{'%2f'.join(PACKAGE)}", "package"),
    ByosCase("deeper-encoded-dotdot", "content",
             f"{CONTAINER_URL}/{BYOS_FOLDER}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/{'/'.join(PACKAGE)}", "package"),
    ByosCase("literal-dotdot", "content", f"{CONTAINER_URL}/../{'/'.join(PACKAGE)}", "package"),
    ByosCase("dot-then-dotdot", "content", f"{CONTAINER_URL}/./%2e%2e/{'/'.join(PACKAGE)}", "package"),
    ByosCase("double-encoded-dotdot", "content", f"{CONTAINER_URL}/%252e%252e/{'/'.join(PACKAGE)}", "crashed"),
    ByosCase("backslash", "content", f"{CONTAINER_URL}/..\\{BACKSLASHED}", "crashed"),
    ByosCase("encoded-backslash", "content", f"{CONTAINER_URL}/..%5c{'%5c'.join(PACKAGE)}", "crashed"),
    ByosCase("empty-segment", "content", f"{CONTAINER_URL}//{BYOS_FOLDER}/doc-1.wav", "crashed"),
    ByosCase("overlong-utf8-dots", "content", f"{CONTAINER_URL}/%C0%AE%C0%AE/{'/'.join(PACKAGE)}", "crashed"),
    ByosCase("unicode-name", "content", f"{CONTAINER_URL}/{BYOS_FOLDER}/%E2%80%AE.wav", "crashed"),
    ByosCase("metadata-encoded-dotdot", "metadata", f"{CONTAINER_URL}/%2e%2e/scm-releases/secrets.json",
             "read-outside"),
    ByosCase("metadata-literal-dotdot", "metadata", f"{CONTAINER_URL}/../scm-releases/secrets.json",
             "read-outside"),
    ByosCase("other-account", "content", f"https://otheracct.blob.core.windows.net/qa-recordings/{BYOS_FOLDER}/x.wav",
             "safe"),
    ByosCase("other-port", "content", f"https://qaacct.blob.core.windows.net:444/qa-recordings/{BYOS_FOLDER}/x.wav",
             "safe"),
    ByosCase("container-prefix", "content", f"{CONTAINER_URL}-evil/{BYOS_FOLDER}/doc-1.wav", "safe"),
    ByosCase("userinfo", "content", f"https://x@qaacct.blob.core.windows.net/qa-recordings/{BYOS_FOLDER}/doc-1.wav",
             "safe"),
    ByosCase("backslash-authority", "content",
             f"https://attacker.example\\@qaacct.blob.core.windows.net/qa-recordings/{BYOS_FOLDER}/doc-1.wav", "safe"),
    ByosCase("uppercase-host", "content", f"https://QAACCT.blob.core.windows.net/qa-recordings/{BYOS_FOLDER}/doc-1.wav",
             "safe"),
    ByosCase("http", "content", f"http://qaacct.blob.core.windows.net/qa-recordings/{BYOS_FOLDER}/doc-1.wav", "safe"),
    ByosCase("container-itself", "content", f"{CONTAINER_URL}/", "crashed"),
    ByosCase("not-a-string", "content", 7, "crashed"),  # type: ignore[arg-type]
]


def byos_account() -> Account:
    import json

    account = new_account()
    account.put("qa-recordings", f"{BYOS_FOLDER}/doc-1.wav", WAV)
    account.put("qa-recordings", f"{BYOS_FOLDER}/doc-1.metadata.json",
                json.dumps({"participants": [{"participantId": CALLER, "channel": 0}]}).encode())
    return account


def byos_copier(account: Account) -> RecordingCopier:
    return RecordingCopier(container=account.container("qa-recordings"), session=None, auth=None,
                           allow=HostAllowList([]))


@pytest.mark.parametrize(("name", "slot", "url", "before"), BYOS_CASES, ids=[c.name for c in BYOS_CASES])
def test_byos_urls_name_blobs_inside_the_container_only(name, slot, url, before):
    """Worked before f82571e for the rows marked ``package`` (the deployment package's tags and metadata
    replaced) and ``read-outside`` (a blob of another container read); failed there for the rows marked
    ``crashed``."""
    account = byos_account()
    urls = {"content": f"{LEGIT}.wav", "metadata": f"{LEGIT}.metadata.json", slot: url}
    status = recording_event(content=urls["content"], metadata=urls["metadata"], channel_type="Unmixed")
    outcome = handle(status, byos_copier(account), in_place=True)
    assert not isinstance(outcome, Exception), f"raised instead of refusing: {outcome!r}"
    assert outcome.refused, outcome
    assert_package_untouched(account)
    assert account.writes == [] and account.reads == []


@pytest.mark.parametrize(
    ("url", "blob"),
    [
        (f"{LEGIT}.wav", f"{BYOS_FOLDER}/doc-1.wav"),
        (f"{CONTAINER_URL}/{BYOS_FOLDER}/doc%2B1.wav", f"{BYOS_FOLDER}/doc+1.wav"),  # the SDK's quoting, decoded once
        (f"{LEGIT}.wav?sv=2024-01-01&sig=a%2Fb%2Bc%3D", f"{BYOS_FOLDER}/doc-1.wav"),  # a SAS is ignored
    ],
)
def test_byos_urls_of_the_container_are_verified_in_place(url, blob):
    account = byos_account()
    if blob != f"{BYOS_FOLDER}/doc-1.wav":
        account.put("qa-recordings", blob, WAV)
    status = recording_event(content=url, metadata=f"{LEGIT}.metadata.json", channel_type="Unmixed")
    outcome = handle(status, byos_copier(account), in_place=True)
    assert not isinstance(outcome, Exception) and outcome.refused is None, outcome
    assert [c.blob for c in outcome.chunks] == [blob]
    assert_package_untouched(account)
    stem = blob.rsplit(".", 1)[0]
    assert {w[2] for w in account.writes} == {blob, f"{stem}/participants/ch0-participant-4_14255550123.wav"}


# -- the same two attacks against Azurite, with the real SDK -------------------------------------------------------


@pytest.fixture
def azurite_containers(azurite: Any) -> Iterator[tuple[Any, Any]]:
    """A QA container and a "package" container in Azurite, reached with an account SAS: like the app's Entra
    token in Azure, and unlike a shared key, it does not sign the request's path, so a name that requests
    rewrites (dot segments removed) is accepted by the service, as it would be in production."""
    from datetime import UTC, datetime, timedelta

    from azure.core.credentials import AzureSasCredential
    from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

    from tools.azurite import ACCOUNT, ACCOUNT_KEY

    sas = generate_account_sas(
        ACCOUNT, ACCOUNT_KEY, ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True, update=True,
                              tag=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    service = BlobServiceClient(f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}", credential=AzureSasCredential(sas))
    suffix = uuid.uuid4().hex[:10]
    qa, package = service.get_container_client(f"qa-{suffix}"), service.get_container_client(f"pkg-{suffix}")
    qa.create_container()
    package.create_container()
    package.upload_blob("app.zip", PACKAGE_BYTES, metadata={"kind": "package"})
    try:
        yield qa, package
    finally:
        for container in (qa, package):
            try:
                container.delete_container()
            except Exception:
                pass


def assert_azurite_package_untouched(package: Any) -> None:
    blob = package.get_blob_client("app.zip")
    assert blob.download_blob().readall() == PACKAGE_BYTES
    assert blob.get_blob_properties().metadata == {"kind": "package"}
    assert [b.name for b in package.list_blobs()] == ["app.zip"]


def test_azurite_a_format_type_cannot_overwrite_the_package(store, azurite_containers):
    """Worked before f82571e: recordingFormatType ``wav/../../../../../../../pkg-…/app.zip`` replaced the
    package with the recording (the SDK quotes the name; requests removes the dot segments; Azurite stores it)."""
    qa, package = azurite_containers
    copier = RecordingCopier(container=qa, session=app_session(store.ca), auth=RecordingAuth(RESOURCE, ACCESS_KEY),
                             allow=HostAllowList(["127.0.0.1"]))
    status = recording_event(content=store.url("/content/audio"), metadata=store.url("/content/acsmetadata"),
                             format_type=f"wav/{UP7}{package.container_name}/app.zip")
    outcome = handle(status, copier)
    assert_azurite_package_untouched(package)
    assert not isinstance(outcome, Exception) and outcome.refused, outcome
    assert list(qa.list_blobs()) == []


def test_azurite_a_byos_url_cannot_retag_the_package(azurite_containers):
    """Worked before f82571e: ``…/qa-…/%2e%2e/pkg-…/app.zip`` passed the prefix check, was decoded into
    ``../pkg-…/app.zip`` and the package's metadata and tags were replaced."""
    qa, package = azurite_containers
    qa.upload_blob("meta.json", json.dumps({"participants": [{"participantId": CALLER, "channel": 0}]}).encode())
    copier = RecordingCopier(container=qa, session=None, auth=None, allow=HostAllowList([]))
    status = recording_event(content=f"{qa.url}/%2e%2e/{package.container_name}/app.zip",
                             metadata=f"{qa.url}/meta.json")
    outcome = handle(status, copier, in_place=True)
    assert package.get_blob_client("app.zip").get_blob_tags() == {}
    assert_azurite_package_untouched(package)
    assert not isinstance(outcome, Exception) and outcome.refused, outcome
