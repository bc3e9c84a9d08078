"""Which recording URLs may be fetched with ACS credentials: one strict parse, an allow-list, no redirects.

A recording URL comes from an event anyone who can reach the endpoint may forge, and the request it leads to
carries ACS's HMAC signature or an Entra token: every such request goes to a URL that ``HostAllowList.check``
(``checked_url``) returned, through the session of ``recording_session``.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass
from typing import Any

from .errors import RefusedUrl, describe

log = logging.getLogger("core.recordings")

# One parse, by the parser the HTTP client uses (urllib3's ``parse_url``, which requests prepares every
# URL with), and only a URL already in its canonical form: what is checked is rebuilt from the checked
# parts, must equal the input character for character, and must come out of requests' own preparation
# unchanged. Anything a second parser could read differently (userinfo, backslashes, percent-encoding,
# non-ASCII, whitespace, fragments, odd ports or IP spellings) is refused before it is looked at twice.

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
MAX_URL_LENGTH = 2048
_URL_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
SEGMENT = re.compile(r"[A-Za-z0-9._~=+,:-]+")  # one path segment, and one blob-name segment once decoded
_ENCODED_SEGMENT = re.compile(r"(?:[A-Za-z0-9._~=+,:-]|%[0-9A-F]{2})+")
_QUERY = re.compile(r"[A-Za-z0-9._~=&+,:-]+")
_ENCODED_QUERY = re.compile(r"(?:[A-Za-z0-9._~=&+,:/-]|%[0-9A-F]{2})+")  # a blob URL's (a SAS), never sent


@dataclass(frozen=True)
class SafeUrl:
    """A URL whose every part was checked; ``url`` is rebuilt from those parts and is what is sent."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None = None

    @property
    def url(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{self.host}{port}{self.path}{query}"

    @property
    def target(self) -> str:
        """The request target (path and query), as the server sees it and ACS's HMAC signs it."""
        return self.path + ("" if self.query is None else f"?{self.query}")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.scheme == "https" else 80)

    def __str__(self) -> str:
        return self.url


def _valid_host(host: str) -> bool:
    """Whether ``host`` is a plain DNS name, a canonical dotted-quad IPv4 address, or a loopback name.

    A DNS name is ``[a-z0-9.-]`` labels, with no IDNA ``xn--`` or other ``??--`` label: nothing a second parser
    could read as another host.
    """
    if host in LOOPBACK_HOSTS:
        return True
    if len(host) > 253:
        return False
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) and label[2:4] != "--" for label in labels):
        return False
    if labels[-1].isdigit():  # an address: only in its one canonical spelling (no 127.1, 0x7f.0.0.1, 0177...)
        import ipaddress

        try:
            return str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            return False
    return True


def parse_canonical(raw: object, *, encoded_path: bool = False) -> SafeUrl:
    """Parse a URL once, as urllib3 (and so requests) does, and accept it only in its canonical form.

    ``encoded_path`` allows percent-encoded octets in the path (blob URLs, which are never fetched, only
    read for a blob name; see ``names.blob_name_in_container``). Any failure, including the parser's own, is a
    ``RefusedUrl``.
    """
    if not isinstance(raw, str):
        raise RefusedUrl(f"not a URL: {describe(raw)}")
    if not raw or len(raw) > MAX_URL_LENGTH:
        raise RefusedUrl(f"URL empty or longer than {MAX_URL_LENGTH} characters: {describe(raw)}")
    if not raw.isascii() or not _URL_CHARS.fullmatch(raw):
        raise RefusedUrl(f"URL with whitespace, a control or a non-ASCII character: {describe(raw)}")
    for char, what in (("\\", "a backslash"), ("@", "userinfo or an @"), ("#", "a fragment")):
        if char in raw:
            raise RefusedUrl(f"URL with {what}: {describe(raw)}")
    if "%" in raw and not encoded_path:
        raise RefusedUrl(f"URL with percent-encoding: {describe(raw)}")
    try:
        from urllib3.util import parse_url

        parsed = parse_url(raw)
    except Exception as exc:  # the parser's own failure is a refusal, never a crash
        raise RefusedUrl(f"unparsable URL ({type(exc).__name__}): {describe(raw)}") from None
    scheme, host, port, path, query = parsed.scheme, parsed.host, parsed.port, parsed.path, parsed.query
    if parsed.auth is not None or parsed.fragment is not None:
        raise RefusedUrl(f"URL with userinfo or a fragment: {describe(raw)}")
    if scheme not in ("https", "http"):
        raise RefusedUrl(f"URL scheme is not https: {describe(raw)}")
    if not host or not _valid_host(host):
        raise RefusedUrl(f"URL host is not a plain lowercase name or address: {describe(raw)}")
    if port is not None and not 0 < port < 65536:
        raise RefusedUrl(f"URL port out of range: {describe(raw)}")
    segment = _ENCODED_SEGMENT if encoded_path else SEGMENT
    segments = (path or "").split("/")
    if not path or segments[0] != "" or not all(segment.fullmatch(s) and s not in (".", "..") for s in segments[1:]):
        raise RefusedUrl(f"URL path empty, with an empty, dot or odd segment: {describe(raw)}")
    if query is not None and not (_ENCODED_QUERY if encoded_path else _QUERY).fullmatch(query):
        raise RefusedUrl(f"URL query with odd characters: {describe(raw)}")
    safe = SafeUrl(scheme, host, port, path, query)
    if safe.url != raw:
        raise RefusedUrl(f"URL not in canonical form (read as {safe.url!r}): {describe(raw)}")
    return safe


def _sendable(safe: SafeUrl) -> SafeUrl:
    """The URL requests will send is the URL that was checked, character for character."""
    try:
        from requests.models import PreparedRequest

        prepared = PreparedRequest()
        prepared.prepare_url(safe.url, None)
        same = prepared.url == safe.url
    except Exception:
        same = False
    if not same:
        raise RefusedUrl(f"URL that requests would send differently: {safe.url!r}")
    return safe


@dataclass(frozen=True)
class _HostPattern:
    host: str
    port: int | None  # None: the default port (any port on a loopback host, as the simulator needs)

    @classmethod
    def parse(cls, text: str) -> _HostPattern:
        text = text.strip().lower()
        if text in ("::1", "[::1]"):
            return cls("[::1]", None)
        host, port = text, None
        if text.startswith("[") and "]:" in text:
            host, _, digits = text.rpartition(":")
            port = int(digits)
        elif text.count(":") == 1:
            host, _, digits = text.partition(":")
            port = int(digits)
        return cls(host, port)

    def matches(self, safe: SafeUrl) -> bool:
        if self.port is not None and safe.effective_port != self.port:
            return False
        if self.host.startswith("*.") and not any(c in self.host[2:] for c in "*?["):
            return safe.host.endswith(self.host[1:])  # at least one label before the suffix
        if any(c in self.host for c in "*?["):
            return fnmatch.fnmatchcase(safe.host, self.host)  # over a host already reduced to [a-z0-9.-]
        return safe.host == self.host


class HostAllowList:
    """Host patterns (``*.asm.skype.com``, ``127.0.0.1``, ``127.0.0.1:8090``) a recording may be fetched from.

    https only, on the default port; a loopback host (127.0.0.1, localhost, [::1]: the local simulator) may
    also be reached over http and on any port, unless its pattern names one.
    """

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())
        parsed = []
        for pattern in self.patterns:
            try:
                parsed.append(_HostPattern.parse(pattern))
            except ValueError:
                log.warning("recording host pattern %r ignored: not host or host:port", pattern)
        self._patterns = tuple(parsed)

    def check(self, url: object) -> SafeUrl:
        """The URL, checked and rebuilt from its checked parts; ``RefusedUrl`` otherwise."""
        safe = parse_canonical(url)
        loopback = safe.host in LOOPBACK_HOSTS
        if safe.scheme != "https" and not loopback:
            raise RefusedUrl(f"{safe.host!r}: credentials never travel in clear text beyond this machine")
        if not loopback and safe.port not in (None, 443):
            raise RefusedUrl(f"{safe.host!r}: port {safe.port} is not the default port")
        if not any(p.matches(safe) for p in self._patterns):
            raise RefusedUrl(f"{safe.host!r} is not an allowed recording host")
        return _sendable(safe)

    def allows(self, url: object) -> bool:
        try:
            self.check(url)
        except RefusedUrl:
            return False
        return True


def checked_url(raw: object, allow: HostAllowList) -> SafeUrl:
    """The one gate in front of every request that carries ACS credentials."""
    return allow.check(raw)


def recording_session() -> Any:
    """The requests session for recording hosts: no proxies from the environment, and never a redirect.

    The session finds no redirect target in any answer, every call passes ``allow_redirects=False`` too, and
    the copier refuses a 3xx (``refuse_redirect``).
    """
    import requests

    class NoRedirectSession(requests.Session):
        def get_redirect_target(self, resp: Any) -> None:
            return None

    session = NoRedirectSession()
    session.trust_env = False  # recording downloads carry credentials: no proxies from the environment
    return session


def refuse_redirect(response: Any, safe: SafeUrl) -> None:
    """Refuse a 3xx from a recording host: its target was never checked, so it is never followed."""
    if 300 <= response.status_code < 400:
        status, location = response.status_code, response.headers.get("Location", "")
        response.close()
        raise RefusedUrl(f"{safe.url} answered {status} to {describe(location)}: redirects are never followed")
