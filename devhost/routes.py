"""Route templates and request paths, as the Functions host (ASP.NET Core routing on Kestrel) reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

# ASP.NET Core route constraints the Functions host applies to route parameters. Constraints not listed
# here (min, max, range, length, minlength, maxlength, regex, required, datetime) are accepted but not
# enforced: the parameter then matches any one segment.
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[a-z]+",
    "guid": r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?",
    "double": r"-?(?:\d+\.?\d*|\.\d+)",
    "float": r"-?(?:\d+\.?\d*|\.\d+)",
    "decimal": r"-?(?:\d+\.?\d*|\.\d+)",
}
_PARAM = re.compile(r"\{([^{}]+)\}")
# Inbound precedence of a segment, as ASP.NET Core ranks routes: lower is tried first.
_LITERAL, _COMPLEX, _CONSTRAINED, _PARAMETER, _CATCH_ALL = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class _Param:
    name: str
    regex: str
    optional: bool
    catch_all: bool
    constrained: bool


def _parse_param(text: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    text = text.rstrip("?")
    text, has_default, _default = text.partition("=")
    name, *constraints = text.split(":")
    name = name.strip()
    if not name.isidentifier():
        raise ValueError(f"route parameter {name!r} is not a name this host can serve")
    regex = r"[^/]+"
    for constraint in constraints:
        known = _CONSTRAINTS.get(constraint.strip().lower())
        if known:
            regex = known
            break
    return _Param(name, regex, optional or bool(has_default), catch_all, bool(constraints))


def _segment(segment: str) -> tuple[str, int]:
    """One path segment of a route template as (regex including its leading slash, precedence)."""
    whole = _PARAM.fullmatch(segment)
    if whole:
        param = _parse_param(whole.group(1))
        if param.catch_all:
            return f"(?:/(?P<{param.name}>.*))?", _CATCH_ALL
        piece = f"/(?P<{param.name}>{param.regex})"
        if param.optional:
            return f"(?:{piece})?", _PARAMETER
        return piece, _CONSTRAINED if param.constrained else _PARAMETER
    if not _PARAM.search(segment):
        return "/" + re.escape(segment), _LITERAL
    # A complex segment: literal text around parameters, e.g. ``{name}.{ext}``.
    pieces, pos = [], 0
    for m in _PARAM.finditer(segment):
        pieces.append(re.escape(segment[pos : m.start()]))
        param = _parse_param(m.group(1))
        # Greedy: delimiters are matched from the right, as ASP.NET Core does ({a}.{b} on x.y.z: a=x.y, b=z).
        pieces.append(f"(?P<{param.name}>{param.regex})" + ("?" if param.optional else ""))
        pos = m.end()
    pieces.append(re.escape(segment[pos:]))
    return "/" + "".join(pieces), _COMPLEX


def _segments(route: str) -> list[str]:
    return [s for s in route.strip("/").split("/") if s] if route.strip("/") else []


def route_pattern(prefix: str, route: str) -> re.Pattern[str]:
    """A Functions route template (``a/{id}``, ``{id:int}``, ``{opt?}``, ``{*rest}``) under the host's
    routePrefix as a regex over the request path. Like the host, literals match case-insensitively, an
    optional or catch-all parameter may be left out together with its slash, and a trailing slash is
    allowed."""
    body = "".join("/" + re.escape(s) for s in _segments(prefix))
    body += "".join(_segment(s)[0] for s in _segments(route))
    return re.compile("^" + body + "/?$", re.IGNORECASE)


def route_precedence(route: str) -> tuple[int, ...]:
    """How the host orders routes that match the same path: literal segments before parameters,
    constrained parameters before free ones, catch-alls last."""
    return tuple(_segment(s)[1] for s in _segments(route))


_ENCODED_SLASH = re.compile("%2F", re.IGNORECASE)


def request_path(raw_path: str) -> str:
    """The path routing sees: Kestrel decodes every escape of the request path but ``%2F``, which stays as sent,
    so an encoded ``/`` stays inside one segment (and one route value) instead of splitting it
    (dotnet/aspnetcore: "the path is decoded except for %2F"; route values keep ``%2F`` encoded)."""
    kept = _ENCODED_SLASH.split(raw_path)
    slashes = _ENCODED_SLASH.findall(raw_path)
    out = [unquote(kept[0])]
    for slash, piece in zip(slashes, kept[1:], strict=True):
        out += [slash, unquote(piece)]
    return "".join(out)
