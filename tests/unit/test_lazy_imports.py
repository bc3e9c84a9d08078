"""Loading the app imports no SDK: each is imported where it is first used (core/platform/clients.py and the
functions that call it), so a cold start pays only for what its first invocation needs.

Each case imports function_app in a fresh interpreter (this one has imported everything already), as
plain Python does and as a Functions host does (AZURE_FUNCTIONS_ENVIRONMENT set: settings and flows
are validated at load), indexes the functions, and lists the SDK modules then loaded.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Not needed to load or index the app: imported on first use.
LAZY = (
    "azure.communication.callautomation",
    "azure.core",
    "azure.data.tables",
    "azure.storage.blob",
    "azure.identity",
    "azure.eventgrid",
    "azure.monitor",
    "opentelemetry",
    "msal",
    "requests",
    "urllib3",
    "jwt",
    "cryptography",
    "aiohttp",
)

PROBE = f"""
import json, sys
import function_app
function_app.app.get_functions()  # indexing, as the worker does
lazy = {LAZY!r}
print(json.dumps(sorted({{m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in lazy)}})))
"""


def host_settings() -> dict[str, str]:
    key = base64.b64encode(os.urandom(32)).decode()
    storage_key = base64.b64encode(os.urandom(32)).decode()
    return {
        "AZURE_FUNCTIONS_ENVIRONMENT": "Development",
        "ACS_CONNECTION_STRING": f"endpoint=https://acs.example.communication.azure.com/;accesskey={key}",
        "ACS_RESOURCE_ID": "00000000-0000-4000-8000-000000000001",
        "CALLBACK_BASE_URL": "https://app.example.net/api",
        "CALLBACK_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "COGNITIVE_SERVICES_ENDPOINT": "https://ai.example.cognitiveservices.azure.com/",
        "ROUTING_RULES": json.dumps({"default": {"type": "answer", "flow": "customer_service"}}),
        "APP_STORAGE": "DefaultEndpointsProtocol=https;AccountName=example;"
        f"AccountKey={storage_key};EndpointSuffix=core.windows.net",
    }


def loaded_sdk_modules(extra_env: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "AZURE_FUNCTIONS_ENVIRONMENT"}
    env.update(extra_env)
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["plain import", "under a Functions host"])
def test_loading_and_indexing_the_app_imports_no_sdk(how: str) -> None:
    extra = host_settings() if how == "under a Functions host" else {}
    assert loaded_sdk_modules(extra) == []
