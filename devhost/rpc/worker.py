"""The language worker, in process: Microsoft's ``azure-functions-runtime`` driven as the host's proxy worker
drives it.

On Python 3.13 and later, Azure runs a Python app with a thin proxy worker that speaks gRPC to the host and hands
each message to the ``azure-functions-runtime`` package pinned in the app's requirements.txt. devhost plays the
host and that proxy at once: it builds the same protocol messages (``devhost/rpc/functions_rpc.proto``) and
passes them to the same runtime entry points, without the gRPC hop. So indexing (which functions exist, with
which bindings), binding conversion and invocation are the runtime's own code, not devhost's.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure_functions_runtime as runtime

from .compile import load

log = logging.getLogger("devhost.worker")
# What the host tells a worker about itself; the runtime reads none of it but FunctionDataCache.
HOST_VERSION = "4.1037.0 (devhost)"


@dataclass
class WorkerRequest:
    """The object the proxy worker passes to each runtime entry point: the host's message and context."""

    name: str
    request: Any  # a StreamingMessage
    properties: dict[str, Any] = field(default_factory=dict)


class WorkerError(RuntimeError):
    """The runtime answered a control message (init, index, load) with Failure."""


class InProcessWorker:
    """Init, index and load the app once; then one invocation per trigger."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir
        self.protos: ModuleType = load()
        self.capabilities: dict[str, str] = {}
        self.metadata: list[Any] = []  # RpcFunctionMetadata, in the runtime's order

    def _request(self, name: str, **content: Any) -> WorkerRequest:
        message = self.protos.StreamingMessage(request_id=str(uuid.uuid4()), **content)
        return WorkerRequest(name, message, {"host": "127.0.0.1", "protos": self.protos})

    @staticmethod
    def _check(what: str, result: Any) -> None:
        if result.status != result.Success:
            raise WorkerError(f"{what} failed: {result.exception.message}")

    async def start(self) -> list[Any]:
        """WorkerInitRequest (the runtime imports function_app.py and indexes it), FunctionsMetadataRequest,
        then a FunctionLoadRequest per function, as the host sends them at start-up."""
        directory = str(self.app_dir)
        if directory not in sys.path:  # the proxy worker puts the app's folder first on sys.path
            sys.path.insert(0, directory)
        os.chdir(directory)  # the worker's working directory is the app's folder
        runtime.start_threadpool_executor()
        init = await runtime.worker_init_request(
            self._request(
                "worker_init_request",
                worker_init_request=self.protos.WorkerInitRequest(
                    host_version=HOST_VERSION, function_app_directory=directory, worker_directory=directory
                ),
            )
        )
        self._check("worker init (indexing function_app.py)", init.result)
        self.capabilities = dict(init.capabilities)
        found = await runtime.functions_metadata_request(
            self._request(
                "functions_metadata_request",
                functions_metadata_request=self.protos.FunctionsMetadataRequest(function_app_directory=directory),
            )
        )
        self._check("functions metadata", found.result)
        self.metadata = list(found.function_metadata_results)
        for metadata in self.metadata:
            loaded = await runtime.function_load_request(
                self._request(
                    "function_load_request",
                    function_load_request=self.protos.FunctionLoadRequest(
                        function_id=metadata.function_id, metadata=metadata
                    ),
                )
            )
            self._check(f"loading {metadata.name}", loaded.result)
        return self.metadata

    async def invoke(self, function_id: str, inputs: dict[str, Any], trigger_metadata: dict[str, Any]) -> Any:
        """One InvocationRequest: ``inputs`` maps binding names to TypedData. Returns the InvocationResponse."""
        protos = self.protos
        request = protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=function_id,
            input_data=[protos.ParameterBinding(name=name, data=data) for name, data in inputs.items()],
            trigger_metadata=trigger_metadata,
            trace_context=protos.RpcTraceContext(trace_parent=_traceparent()),
        )
        return await runtime.invocation_request(self._request("invocation_request", invocation_request=request))

    def stop(self) -> None:
        runtime.stop_threadpool_executor()


def _traceparent() -> str:
    """A W3C traceparent for the invocation, as the host passes its Activity's."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
