"""``python -m devhost``: serve the app's functions on 127.0.0.1 as the Functions host would."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from aiohttp import web

from .host import DEFAULT_REQUEST_BODY_LIMIT, REQUEST_BODY_LIMIT_SETTING, Host, Keys, check_key
from .rpc.worker import WorkerError

# The settings file read when --settings is not given (and --no-settings is not), if it exists, as Core Tools does.
DEFAULT_SETTINGS = "local.settings.json"
# How long a SIGTERM lets the requests in hand finish (``--drain-seconds``).
DEFAULT_DRAIN_SECONDS = 30.0

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
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument(
        "--settings",
        metavar="FILE",
        help=f"settings file (relative to --app-dir) whose Values become environment variables; it must exist"
        f" (default: {DEFAULT_SETTINGS}, read if it exists)",
    )
    chosen.add_argument(
        "--no-settings",
        action="store_true",
        help=f"read no settings file, not even {DEFAULT_SETTINGS}: app settings come from the environment only",
    )
    p.add_argument(
        "--function-key",
        help="key for function-level HTTP triggers (default: DEVHOST_FUNCTION_KEY from the environment or the settings"
        " file's Values, else random, printed)",
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
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=DEFAULT_DRAIN_SECONDS,
        help="on SIGTERM (or SIGINT) stop taking requests and let those in hand finish for at most this long, then exit"
        " (0 once all finished, 1 if cut short; a second signal cuts it short)"
        f" (default: {DEFAULT_DRAIN_SECONDS:g})",
    )
    args = p.parse_args()
    if args.drain_seconds < 0:
        p.error("--drain-seconds must not be negative")
    app_dir = Path(args.app_dir).resolve()
    in_environment = set(os.environ)  # what the environment sets wins over the settings file (as in Core Tools)
    try:
        settings_file, values = read_settings(app_dir, args.settings, args.no_settings)
    except SettingsFileError as exc:
        p.error(str(exc))
    for key, value in values.items():
        os.environ.setdefault(key, value)
    # As the Functions host does for its workers (Core Tools: Development; Azure: Production).
    os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # Keys: the argument, else the environment (where local.settings.json's Values went), else a new random
    # one. They are the host's, not the app's: taken out of the environment the functions run in, as in Azure.
    keys = Keys()  # each one new and random unless given
    shown = [f"  settings: {settings_source(app_dir, settings_file, args.no_settings, len(values))}"]
    made = []
    for attr, variable, what in KEYS:
        from_env = os.environ.pop(variable, "").strip()
        given = (getattr(args, attr) or "").strip() or from_env
        name = attr.removesuffix("_key")
        if given:
            source = key_source(attr, variable, args, in_environment, settings_file)
            try:
                setattr(keys, name, check_key(source, given))
            except ValueError as exc:
                p.error(str(exc))
            shown.append(f"  {what}: from {source}")  # a key given is never printed
        else:
            shown.append(f"  {what}: {getattr(keys, name)}")
            made.append(variable)
    if made:
        shown.append(
            f"  (keys made at start-up change at every start; to keep one, set {', '.join(made)} in the settings"
            " file's Values or the environment, or pass it as an option)"
        )

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
        code = asyncio.run(serve(host, args.host, args.port, args.drain_seconds))
    except WorkerError as exc:  # the app failed to import or index: the worker's reason, as the host logs it
        raise SystemExit(f"devhost: {exc}") from None
    raise SystemExit(code)


class SettingsFileError(ValueError):
    """A settings file asked for that cannot be read: devhost stops (exit 2) naming it."""


def read_settings(app_dir: Path, given: str | None, none: bool) -> tuple[Path | None, dict[str, str]]:
    """The settings file read (None: none) and its Values. ``given`` (relative to ``app_dir``) must exist; without
    it, ``local.settings.json`` is read if it exists, as Core Tools does."""
    if none:
        return None, {}
    path = app_dir / (given or DEFAULT_SETTINGS)
    if not path.is_file():
        if given is None:
            return None, {}
        raise SettingsFileError(f"--settings {given}: no such file: {path}")
    try:
        values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise SettingsFileError(f"settings file {path}: not a JSON object: {exc}") from None
    if not isinstance(values, dict):
        raise SettingsFileError(f"settings file {path}: Values must be an object of settings")
    return path, {str(key): str(value) for key, value in values.items()}


def settings_source(app_dir: Path, path: Path | None, none: bool, count: int) -> str:
    """Which settings file was read, in one line (the first thing to check when a setting seems missing)."""
    if path is not None:
        return f"{count} value(s) from {path} (the environment wins where both set one)"
    if none:
        return "no settings file read (--no-settings): app settings from the environment only"
    return f"no settings file read (no {app_dir / DEFAULT_SETTINGS}): app settings from the environment only"


def key_source(attr: str, variable: str, args: argparse.Namespace, environment: set[str], path: Path | None) -> str:
    """Where a key given came from, without the key: the option, the environment or the settings file."""
    if (getattr(args, attr) or "").strip():
        return f"--{attr.replace('_', '-')}"
    if variable in environment or path is None:
        return f"{variable} in the environment"
    return f"{variable} in {path.name} (Values)"


async def serve(host: Host, address: str, port: int, drain_seconds: float) -> int:
    """Serve until SIGTERM or SIGINT, then drain, as an instance the platform scales in: the listener closes (new
    connections are refused), open connections take no new request, and the requests in hand run to their end, for
    at most ``drain_seconds``. 0 when every one finished; when the bound passes or a second signal comes first, the
    process ends at once (``os._exit``: an invocation still running in the worker's threads cannot be stopped, and
    would keep a normal exit waiting), with 1."""
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    runner = web.AppRunner(host.web, access_log=None)
    await runner.setup()  # the web app's start-up: the worker indexes and loads the app
    site = web.TCPSite(runner, address, port)
    await site.start()
    first = await signals.get()
    deadline = loop.time() + drain_seconds
    print(
        f"devhost: {first.name}: draining, {host.in_flight} request(s) in hand, for at most {drain_seconds:g}s",
        flush=True,
    )
    # Connections the kernel completed before the signal are taken first (one pass of the loop accepts them), and
    # their requests read; then the listener closes and no open connection takes another request.
    await asyncio.sleep(0.02)
    await site.stop()
    await asyncio.sleep(0.02)
    if runner.server is not None:
        runner.server.pre_shutdown()
    if host.in_flight:
        drained = asyncio.ensure_future(host.drained())
        again = asyncio.ensure_future(signals.get())
        done, _ = await asyncio.wait(
            {drained, again}, timeout=max(deadline - loop.time(), 0), return_when=asyncio.FIRST_COMPLETED
        )
        if drained not in done:
            why = f"a second {again.result().name}" if again in done else f"the drain bound ({drain_seconds:g}s)"
            print(f"devhost: drain cut short by {why}: {host.in_flight} request(s) abandoned; exiting", flush=True)
            _exit_now(1)
        again.cancel()
    print("devhost: drained: every request in hand finished; exiting", flush=True)
    # The rest of the exit (the worker's thread pool, the runtime) must not outlast the bound either (a second
    # signal from here on finds the default handler: the process ends at once).
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    watchdog = threading.Timer(max(deadline - loop.time(), 1.0), _exit_now, args=(1,))
    watchdog.daemon = True
    watchdog.start()
    await runner.cleanup()
    return 0


def _exit_now(code: int) -> None:
    """End the process at once, whatever threads still run (their output flushed first)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
