"""What the host puts into an InvocationRequest, and what it makes of the InvocationResponse.

Each rule names its source in the Functions host (Azure/azure-functions-host, release 4.1037.0,
``src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs``, ``ToRpcHttp``; and
``src/WebJobs.Script/Binding/Http/RawScriptResult.cs`` for the response) or in the Event Grid extension
(Azure/azure-sdk-for-net, ``Microsoft.Azure.WebJobs.Extensions.EventGrid``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict


def joined(pairs: Iterable[tuple[str, str]], *, lower: bool = False) -> dict[str, str]:
    """Repeated names as one entry, values joined with ``,``: ASP.NET Core's ``StringValues.ToString()``."""
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower() if lower else name, []).append(value)
    return {name: ",".join(values) for name, values in out.items()}


def rpc_query(raw: str) -> dict[str, str]:
    """``RpcHttp.query``: every key of the query, ``code`` included; repeated keys joined with ``,``; keys whose
    value is empty left out (``ToRpcHttp``: ``if (!string.IsNullOrEmpty(value)) http.Query.Add(...)``). Read as
    ASP.NET Core's ``QueryHelpers.ParseQuery`` reads it: ``&``-separated, ``+`` a space, escapes decoded."""
    pairs = parse_qsl(raw.lstrip("?"), keep_blank_values=True)
    return {name: value for name, value in joined(pairs).items() if value}


def rpc_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``RpcHttp.headers``: names lowercased (``pair.Key.ToLowerInvariant()``), repeated headers joined with ``,``,
    empty values kept (the Python worker does not declare ``IgnoreEmptyValuedRpcHttpHeaders``)."""
    return joined(headers, lower=True)


def http_input(
    protos: ModuleType,
    *,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    raw_query: str,
    route_params: Mapping[str, str],
    body: bytes | None,
) -> Any:
    """The trigger's TypedData. ``body`` is None when the host passes none: it reads the body only when
    ``request.ContentLength > 0``, so a chunked request (no Content-Length) reaches the function with an empty
    body (Azure/azure-functions-host#7930: "Chunked requests are not currently supported for the OOP
    scenarios"). The Python worker declares ``RawHttpBodyBytes``, so the body goes as bytes, never as a string."""
    http = protos.RpcHttp(
        method=method,
        url=url,
        headers=rpc_headers(headers),
        query=rpc_query(raw_query),
        params=dict(route_params),
    )
    if body:
        http.body.CopyFrom(protos.TypedData(bytes=body))
    return protos.TypedData(http=http)


def route_metadata(protos: ModuleType, route_params: Mapping[str, str]) -> dict[str, Any]:
    """Trigger metadata of an HTTP invocation: the route values (the host's binding data); the request itself is
    left out, as the worker declares ``RpcHttpTriggerMetadataRemoved``."""
    return {name: protos.TypedData(string=value) for name, value in route_params.items()}


def eventgrid_input(protos: ModuleType, event: Mapping[str, Any]) -> Any:
    """One event of a delivery as the Event Grid extension hands it to an out-of-process worker: the event's JSON
    (the extension's trigger value is a ``JToken``, one per event for a single-dispatch function)."""
    return protos.TypedData(json=json.dumps(event))


def http_output(result: Any) -> tuple[int, CIMultiDict[str], bytes]:
    """An HTTP function's return value (TypedData) as the host writes the response (``RawScriptResult``): the
    status code, the headers as given, the body's bytes; a plain string is a 200 with that text."""
    kind = result.WhichOneof("data")
    if kind == "string":
        return 200, CIMultiDict({"Content-Type": "text/plain; charset=utf-8"}), result.string.encode()
    if kind != "http":
        raise TypeError(f"an HTTP function returned TypedData {kind!r}, not an HTTP response")
    http = result.http
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in http.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            headers.add(name, value)
    for cookie in http.cookies:
        headers.add("Set-Cookie", f"{cookie.name}={cookie.value}")
    status = int(http.status_code) if http.status_code else 200
    return status, headers, _body_bytes(http.body)


def _body_bytes(body: Any) -> bytes:
    kind = body.WhichOneof("data")
    if kind is None:
        return b""
    if kind in ("bytes", "stream"):
        return getattr(body, kind)
    if kind in ("string", "json"):
        return getattr(body, kind).encode()
    return str(getattr(body, kind)).encode()
