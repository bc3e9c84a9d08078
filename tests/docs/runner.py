"""Run a page's shell blocks as a reader would: one bash session per page, blocks in order, in a fresh copy of the
repository, servers started by ``background`` blocks waited for and stopped at the end; and the stack that
``<!-- doctest: stack -->`` pages run against (Azurite, the simulator and the app on the documented fixed ports).

Everything binds loopback only, every wait is bounded, and everything a page started is stopped (its process
group) however the page ends.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.docs.markdown import ROOT, Block, Page, display

STACK_PORTS = (10000, 10001, 10002, 8090, 7071)
PAGE_TIMEOUT = 240.0  # seconds for a whole page's blocks
PORT_TIMEOUT = 60  # seconds a background block has to listen on each of its ports
LINKED = (".venv", "node_modules")  # set up by `make setup`, too big to copy: linked
COPIED = ("devhost/rpc/_generated",)  # generated at `make setup`, not tracked: copied


class DocTestFailure(AssertionError):
    """A block failed; the message names it (file:line) and shows its output's tail."""


def in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def require_free(ports: Iterable[int], why: str = "") -> None:
    """Fail with a clear message when something already listens on one of the fixed ports a page needs."""
    busy = [p for p in ports if in_use(p)]
    if busy:
        raise DocTestFailure(
            "; ".join(f"port {p} in use: stop what runs there" for p in busy)
            + (f" ({why})" if why else "")
            + ". The doc tests bind the documented fixed ports (Azurite 10000-10002, simulator 8090, app 7071)."
        )


def wait_free(ports: Iterable[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while in_use(port):
            if time.monotonic() > deadline:
                raise DocTestFailure(f"port {port} still in use {timeout:g}s after the page's processes were stopped")
            time.sleep(0.1)


def copy_repo(dest: Path, root: Path = ROOT) -> Path:
    """A copy of the working tree as a reader's clone has it (tracked and new files, not ignored ones; times kept,
    so `make setup` finds it up to date), with ``.venv`` and ``node_modules`` linked and the generated code copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = root / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    for name in LINKED:
        if (root / name).exists():
            (dest / name).symlink_to(root / name)
    for name in COPIED:
        if (root / name).is_dir():
            shutil.copytree(root / name, dest / name, dirs_exist_ok=True)
    return dest


def session_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the app's settings and the host's keys (a reader's shell has none of
    them, and a set one would win over local.settings.json), nor make's, plus ``extra``."""
    from core.platform.settings import SETTING_NAMES

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTING_NAMES and not k.startswith(("DEVHOST_", "MAKE", "MFLAGS", "PYTEST_"))
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


PRELUDE = r"""
__dt_wait_port() {  # PORT PID LOG SECONDS: until PORT listens on 127.0.0.1, while the block's process lives
  local port=$1 pid=$2 log=$3 deadline=$((SECONDS + $4))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "doctest: the background block exited before port $port listened; its output:"; tail -n 40 "$log"; return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "doctest: nothing listened on port $port within $4 s; the block's output:"; tail -n 40 "$log"; return 1
    fi
    sleep 0.1
  done
}
set -eo pipefail
"""


def script(blocks: list[Block], work: Path, state: Path) -> str:
    """The session's bash script: each block sourced in order (background ones in a subshell, then waited for)."""
    lines = [PRELUDE]
    for index, block in enumerate(blocks):
        assert block.marker is not None
        source = work / f"block-{index}.sh"
        source.write_text(block.text)
        lines.append(f"echo {index} > {shlex.quote(str(state))}")
        lines.append(f"echo '@@doctest {index}@@'")
        if block.marker.kind == "background":
            log = work / f"block-{index}.log"
            lines.append(f"( source {shlex.quote(str(source))} ) > {shlex.quote(str(log))} 2>&1 < /dev/null &")
            lines.append("__dt_pid=$!")
            lines += [
                f"__dt_wait_port {port} $__dt_pid {shlex.quote(str(log))} {PORT_TIMEOUT}" for port in block.marker.ports
            ]
        else:
            lines.append(f"source {shlex.quote(str(source))}")
    lines.append(f"echo done > {shlex.quote(str(state))}")
    return "\n".join(lines) + "\n"


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the session and everything it started (its process group): SIGTERM, then SIGKILL after 10 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        process.poll()  # reap the session itself: a zombie would keep the group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process.poll() is None:
        process.wait(timeout=5)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class PageRun:
    """What a page's session printed, by block, and how long it took."""

    output: str
    seconds: float


def run_page(page: Page, env: dict[str, str] | None = None, timeout: float = PAGE_TIMEOUT) -> PageRun:
    """Run the page's run and background blocks in one bash session in a fresh copy of the repository; raise
    DocTestFailure naming the failing block (file:line) with its output's tail."""
    blocks = [b for b in page.blocks if b.marker is not None and b.marker.kind in ("run", "background")]
    fixed = sorted({p for b in blocks if b.marker is not None for p in b.marker.ports})
    require_free(fixed, f"needed by {display(page.path)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="doctest-") as temp:
        base = Path(temp)
        repo = copy_repo(base / "repo")
        work = base / "session"
        work.mkdir()
        _require_setup(repo)
        state = work / "state"
        (work / "session.sh").write_text(script(blocks, work, state))
        out_path = work / "output.log"
        with open(out_path, "wb") as out:
            process = subprocess.Popen(
                ["bash", str(work / "session.sh")],
                cwd=repo, env=session_environment(env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    code = None
            finally:
                stop_group(process)
        output = out_path.read_text(errors="replace")
        reached = state.read_text().strip() if state.exists() else "0"
        if code != 0 or reached != "done":
            index = int(reached) if reached.isdigit() else len(blocks) - 1
            block = blocks[index]
            own = output.split(f"@@doctest {index}@@", 1)[-1]
            why = f"timed out after {timeout:g}s" if code is None else f"exit status {code}"
            servers = "".join(
                f"\n--- output of the background block {blocks[int(log.stem.split('-')[1])].where} ---\n"
                + _tail(log.read_text(errors="replace"), 20)
                for log in sorted(work.glob("block-*.log"))
            )
            raise DocTestFailure(f"{block.where}: the block failed ({why}); its output:\n{_tail(own)}{servers}")
    wait_free(fixed)
    return PageRun(output, time.monotonic() - started)


def _require_setup(repo: Path) -> None:
    """The copy links the checkout's .venv and node_modules: they must be up to date, or a page's `make` would
    rebuild them (through the link) under the other tests."""
    check = subprocess.run(["make", "-q", "setup"], cwd=repo, capture_output=True, env=session_environment())
    if check.returncode != 0:
        raise DocTestFailure(
            "`make setup` is not up to date in this checkout (`make -q setup` says so): run `make setup` first;"
            " the doc tests use the checkout's .venv and node_modules and never rebuild them"
        )


# -- the stack: Azurite, the simulator and the app on the fixed ports ---------------------------------------------


@dataclass
class Stack:
    """What ``<!-- doctest: stack -->`` pages get in their environment, and how to stop it."""

    env: dict[str, str]
    stop_all: list

    def stop(self) -> None:
        for stop in reversed(self.stop_all):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the rest whatever one of them raised
                pass
        wait_free(STACK_PORTS)


def example_settings(key: str) -> dict[str, str]:
    """local.settings.example.json's Values with its placeholders filled as docs/walkthrough.md fills them."""
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    values = {k: str(v) for k, v in values.items() if not k.startswith("DEVHOST_")}
    values["ACS_CONNECTION_STRING"] = f"endpoint=http://127.0.0.1:8090/;accesskey={key}"
    values["CALLBACK_SECRET"] = base64.b64encode(os.urandom(32)).decode()
    left = [k for k, v in values.items() if "<" in v and ">" in v]
    if left:
        raise DocTestFailure(f"local.settings.example.json: placeholders the stack does not fill: {left}")
    return values


def start_stack() -> Stack:
    """Azurite (10000-10002), the simulator (8090) and the app under devhost (7071), with the Event Grid
    subscriptions made, as docs/walkthrough.md starts them; fails at once if a port is taken."""
    from simulator.engine import Config
    from simulator.runner import SimulatorThread
    from tools import azurite
    from tools.apphost import AppProcess, host_environment, launch_host, subscribe_eventgrid, wait_serving

    require_free(STACK_PORTS, "needed by the doc tests' stack")
    stops: list = []
    stack = Stack({}, stops)
    try:
        storage = azurite.start(ports=(10000, 10001, 10002))
        stops.append(storage.stop)
        key = base64.b64encode(os.urandom(32)).decode()
        simulator = SimulatorThread(config=Config(), port=8090, access_key=key)
        sim = simulator.__enter__()
        stops.append(lambda: simulator.__exit__(None, None, None))
        function_key, eventgrid_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        settings = example_settings(key)
        log = Path(tempfile.mkstemp(prefix="doctest-app-", suffix=".log")[1])
        env = host_environment(settings, function_key, eventgrid_key, ROOT)
        host = launch_host(ROOT, 7071, env, log)
        app = AppProcess("http://127.0.0.1:7071", host, log, settings, function_key, eventgrid_key)
        stops.append(app.stop)
        wait_serving(app.base_url, host, log, 30)
        subscribe_eventgrid(sim, app)
    except BaseException:
        stack.stop()
        raise
    stack.env.update(
        KEY=key, FUNCTION_KEY=function_key, EG_KEY=eventgrid_key, APP="http://127.0.0.1:7071/api",
        SIM="http://127.0.0.1:8090",
    )
    return stack
