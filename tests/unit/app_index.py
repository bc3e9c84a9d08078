"""function_app.py's functions as the worker reports them to the host (for tests that need devhost's index
without starting a worker): each function's name and the raw bindings the azure-functions library writes, which is
what ``azure-functions-runtime`` sends in ``RpcFunctionMetadata.raw_bindings`` (its ``get_fx_raw_bindings``)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import azure.functions as func

from devhost.functions import FunctionEntry, Index, index

ROOT = Path(__file__).resolve().parents[2]


def fresh_app() -> func.FunctionApp:
    """function_app.py's FunctionApp, executed anew (``get_functions()`` works once per app)."""
    return runpy.run_path(str(ROOT / "function_app.py"), run_name="function_app")["app"]


def entries(app: func.FunctionApp) -> list[FunctionEntry]:
    return [
        FunctionEntry(f.get_function_name(), f.get_function_name(), tuple(json.loads(b) for b in f.get_raw_bindings()))
        for f in app.get_functions()
    ]


def served(route_prefix: str) -> Index:
    """What devhost serves of function_app.py under ``route_prefix``."""
    return index(entries(fresh_app()), route_prefix)
