"""``python -m devhost``: serve the app's functions on 127.0.0.1 as the Functions host would."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from .host import DEFAULT_REQUEST_BODY_LIMIT, REQUEST_BODY_LIMIT_SETTING, Host, Keys, check_key
from .rpc.worker import WorkerError

# Each host key: (argument, environment variable or local.settings.json Values entry, what it opens).
KEYS = (
    ("function_key", "DEVHOST_FUNCTION_KEY", "function key"),
    ("master_key", "DEVHOST_MASTER_KEY", "master key"),
    ("eventgrid_key", "DEVHOST_EVENTGRID_KEY", "Event Grid system key (eventgrid_extension)"),
)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    p.add_argument("--app-dir", default=".", help="folder with function_app.py and host.json")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7071)
    p.add_argument(
        "--settings",
        default="local.settings.json",
        help="local.settings.json whose Values become environment variables (if the file exists)",
    )
    p.add_argument(
        "--function-key",
        help="key for function-level HTTP triggers (default: DEVHOST_FUNCTION_KEY, else random, printed)",
    )
    p.add_argument(
        "--master-key",
        help="master key: admin-level HTTP triggers, and any other level (default: DEVHOST_MASTER_KEY, else random,"
        " printed)",
    )
    p.add_argument(
        "--eventgrid-key",
        help="the eventgrid_extension system key Event Grid deliveries must carry as code= (default:"
        " DEVHOST_EVENTGRID_KEY, else random, printed)",
    )
    p.add_argument(
        "--request-body-limit",
        type=int,
        help=f"largest HTTP request body in bytes, larger ones get 413 (default: {REQUEST_BODY_LIMIT_SETTING},"
        f" else {DEFAULT_REQUEST_BODY_LIMIT} as on Azure)",
    )
    args = p.parse_args()
    app_dir = Path(args.app_dir).resolve()
    settings = app_dir / args.settings
    if settings.exists():
        for key, value in json.loads(settings.read_text()).get("Values", {}).items():
            os.environ.setdefault(key, str(value))
    # As the Functions host does for its workers (Core Tools: Development; Azure: Production).
    os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # Keys: the argument, else the environment (where local.settings.json's Values went), else a new random
    # one. They are the host's, not the app's: taken out of the environment the functions run in, as in Azure.
    keys = Keys()  # each one new and random unless given
    shown = []
    for attr, variable, what in KEYS:
        from_env = os.environ.pop(variable, "").strip()
        source = f"--{attr.replace('_', '-')}" if getattr(args, attr) else variable
        given = (getattr(args, attr) or "").strip() or from_env
        name = attr.removesuffix("_key")
        if given:
            try:
                setattr(keys, name, check_key(source, given))
            except ValueError as exc:
                p.error(str(exc))
            shown.append(f"  {what}: from {source}")
        else:
            shown.append(f"  {what}: {getattr(keys, name)}")

    limit = args.request_body_limit
    if limit is None:
        try:
            limit = int(os.environ.get(REQUEST_BODY_LIMIT_SETTING) or DEFAULT_REQUEST_BODY_LIMIT)
        except ValueError:
            p.error(f"{REQUEST_BODY_LIMIT_SETTING} must be a number of bytes")
    if limit <= 0:
        p.error("the request body limit must be a positive number of bytes")

    host = Host(app_dir, keys=keys, request_body_limit=limit)
    print(f"Functions (local host) at http://{args.host}:{args.port}; route prefix /{host.route_prefix}", flush=True)
    for line in shown:
        print(line, flush=True)
    print(
        f"  Event Grid subscriptions: http://{args.host}:{args.port}/runtime/webhooks/eventgrid"
        "?functionName=<name>&code=<Event Grid system key>",
        flush=True,
    )
    print(f"  request bodies up to {limit} bytes (Event Grid: {host.eventgrid_body_limit})", flush=True)
    # At start-up the worker (azure-functions-runtime) indexes function_app.py; the functions are listed then.
    try:
        web.run_app(host.web, host=args.host, port=args.port, print=None, access_log=None)
    except WorkerError as exc:  # the app failed to import or index: the worker's reason, as the host logs it
        raise SystemExit(f"devhost: {exc}") from None


if __name__ == "__main__":
    main()
