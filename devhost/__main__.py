"""``python -m devhost``: serve the app's functions on 127.0.0.1 as the Functions host would."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from .host import Host, Keys


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
        default=os.environ.get("DEVHOST_FUNCTION_KEY"),
        help="key for function-level HTTP triggers (default: random, printed)",
    )
    p.add_argument(
        "--master-key",
        default=os.environ.get("DEVHOST_MASTER_KEY"),
        help="master key: admin-level HTTP triggers, and any other level (default: random, printed)",
    )
    p.add_argument(
        "--eventgrid-key",
        default=os.environ.get("DEVHOST_EVENTGRID_KEY"),
        help="require this eventgrid_extension system key (code=) on Event Grid deliveries (default: not required)",
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
    keys = Keys(eventgrid=args.eventgrid_key or None)
    if args.function_key:
        keys.function = args.function_key
    if args.master_key:
        keys.master = args.master_key
    host = Host(app_dir, keys=keys)
    print(f"Functions (local host) at http://{args.host}:{args.port}; route prefix /{host.route_prefix}", flush=True)
    print(f"  function key {keys.function}; master key {keys.master}", flush=True)
    print(f"  Event Grid system key {'required' if keys.eventgrid else 'not required'}", flush=True)
    for line in host.describe():
        print(line, flush=True)
    web.run_app(host.web, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
