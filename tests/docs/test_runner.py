"""The doc-test runner itself, on small markdown pages written for each test: markers parsed and enforced (each
problem named file:line), curls read as curl reads them, bodies judged by openapi.json and the app's models, and
a page's blocks run in one session whose failures name the block and show its output."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from tests.docs.markdown import parse_page
from tests.docs.runner import DocTestFailure, in_use, run_page
from tests.docs.shell import curls
from tests.docs.validate import block_problems, find_route, request_problems

pytestmark = pytest.mark.docs


def page_of(tmp_path: Path, text: str, name: str = "page.md"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return parse_page(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- markers -------------------------------------------------------------------------------------------------------


def test_markers_are_read_with_their_arguments(tmp_path):
    page = page_of(
        tmp_path,
        """
        # A page
        <!-- doctest: stack -->

        <!-- doctest: run -->
        ```bash
        echo hi
        ```

        <!-- doctest: background wait=8080,8081 -->
        ```sh
        serve
        ```

        <!-- doctest: skip needs an Azure subscription -->
        ```console
        $ az login
        ```

        <!-- doctest: json request post /api/calls/{id}/play -->
        ```json
        {"prompts": [{"text": "hi"}]}
        ```

        ```python
        print("no marker needed")
        ```
        """,
    )
    assert page.problems == []
    assert page.stack and page.runs
    kinds = [(b.language, b.line, b.marker and b.marker.kind) for b in page.blocks]
    assert kinds == [
        ("bash", 5, "run"),
        ("sh", 10, "background"),
        ("console", 15, "skip"),
        ("json", 20, "json request"),
        ("python", 24, None),
    ]
    assert page.blocks[1].marker.ports == (8080, 8081)
    assert page.blocks[2].marker.reason == "needs an Azure subscription"
    assert (page.blocks[3].marker.method, page.blocks[3].marker.route) == ("POST", "/api/calls/{id}/play")
    assert page.blocks[0].text == "echo hi\n"


def test_a_block_without_a_marker_is_named_by_file_and_line(tmp_path):
    page = page_of(
        tmp_path,
        """
        Text.

        ```bash
        make demo
        ```

        ```yaml
        calls: []
        ```
        """,
    )
    assert len(page.problems) == 2
    assert page.problems[0].startswith(f"{tmp_path / 'page.md'}:3: ```bash block without a doctest marker")
    assert page.problems[1].startswith(f"{tmp_path / 'page.md'}:7: ```yaml block without a doctest marker")


@pytest.mark.parametrize(
    ("marker", "fence", "says"),
    [
        ("<!-- doctest: skip -->", "bash", "'skip' needs a reason"),
        ("<!-- doctest: runn -->", "bash", "unknown doctest marker 'runn'"),
        ("<!-- doctest: background -->", "bash", "'background' needs wait=PORT"),
        ("<!-- doctest: background wait=http -->", "bash", "ports must be numbers"),
        ("<!-- doctest: json request /api/calls -->", "json", "'json request' needs METHOD /api/ROUTE"),
        ("<!-- doctest: run now -->", "bash", "'run' takes no arguments"),
        ("<!-- doctest: run -->", "json", "marker 'run' does not fit a ```json block"),
        ("<!-- doctest: json flows -->", "yaml", "marker 'json flows' does not fit a ```yaml block"),
        ("text <!-- doctest: run -->", "bash", "must be an HTML comment alone on its line"),
    ],
)
def test_a_wrong_marker_is_refused_with_its_line(tmp_path, marker, fence, says):
    page = page_of(tmp_path, f"# Title\n\n{marker}\n```{fence}\nx\n```\n")
    assert page.problems, marker
    assert page.problems[0].startswith(f"{tmp_path / 'page.md'}:"), page.problems
    assert says in "\n".join(page.problems), page.problems


def test_markers_misplaced_or_quoted(tmp_path):
    page = page_of(
        tmp_path,
        """
        <!-- doctest: run -->

        ```bash
        echo the marker is not on the line just before
        ```

        In prose, `<!-- doctest: run -->` is quoted, not a marker.

        - a list item:

          <!-- doctest: skip indented blocks take markers too -->
          ```bash
          az login
          ```
        """,
    )
    assert page.problems[0].endswith(":1: doctest marker not followed by a fenced block on the next line")
    assert ":3: ```bash block without a doctest marker" in page.problems[1]
    assert len(page.problems) == 2
    assert page.blocks[1].marker.kind == "skip" and page.blocks[1].text == "az login\n"


def test_stack_is_a_page_marker(tmp_path):
    page = page_of(tmp_path, "<!-- doctest: stack -->\n```bash\nx\n```\n")
    assert any("'stack' is a page's marker" in p for p in page.problems)
    page = page_of(tmp_path, "<!-- doctest: stack -->\n\n<!-- doctest: skip reading -->\n```bash\nx\n```\n")
    assert any("'stack' on a page without run blocks" in p for p in page.problems)


# -- curls and bodies ----------------------------------------------------------------------------------------------


def test_curls_are_read_as_curl_reads_them():
    text = textwrap.dedent(
        """
        ID=$(curl --fail-with-body -s -X POST "$APP/calls" -H 'Content-Type: application/json' \\
          -d '{"targets": [{"to": "8:acs:a"}]}' | field call_connection_id)
        curl -sS "$APP/calls/$ID" 2>&1 > out.json   # a comment with curl -f in it
        .venv/bin/python - <<'EOF'
        print('curl -d "{}" http://x/api/calls')
        EOF
        curl -fsS --data-raw "{\\"who\\": \\"$WHO\\"}" http://127.0.0.1:7071/api/calls/abc/mute
        """
    )
    found = curls(text)
    assert [(c.method, c.urls, c.fails) for c in found] == [
        ("POST", ["$APP/calls"], True),
        ("GET", ["$APP/calls/$ID"], False),
        ("POST", ["http://127.0.0.1:7071/api/calls/abc/mute"], True),
    ]
    assert found[0].bodies == ['{"targets": [{"to": "8:acs:a"}]}']
    assert found[2].bodies == ['{"who": "$WHO"}']


def test_routes_match_the_openapi_templates():
    assert find_route("POST", "/api/calls/abc-123/play") == "/api/calls/{call_connection_id}/play"
    assert find_route("POST", "/api/calls/{id}/play") == "/api/calls/{call_connection_id}/play"
    assert find_route("GET", "/api/calls/x/participants") == "/api/calls/{call_connection_id}/participants"
    assert find_route("POST", "/api/calls") == "/api/calls"
    assert find_route("GET", "/api/nothing") is None


def test_request_bodies_are_judged_by_openapi_and_the_apps_model():
    good = {"prompts": [{"text": "Hi", "voice": "en-US-JennyNeural"}]}
    assert request_problems("POST", "/api/calls/x/play", good) == []
    wrong = request_problems("POST", "/api/calls/x/play", {"text": "Hi", "voice": "en-US-JennyNeural"})
    assert any("openapi.json" in p and "prompts" in p for p in wrong), wrong
    assert any("the app" in p for p in wrong), wrong
    assert request_problems("POST", "/api/nowhere", {}) == ["POST /api/nowhere: no such route in openapi.json"]
    assert request_problems("GET", "/api/calls/x", {}) == ["GET /api/calls/{call_connection_id} takes no request body"]


def test_a_curl_in_any_block_has_its_body_checked_and_a_run_block_needs_fail(tmp_path):
    page = page_of(
        tmp_path,
        """
        <!-- doctest: skip needs a deployed app -->
        ```bash
        curl -X POST "https://contoso.azurewebsites.net/api/calls/$ID/play" -H "x-functions-key: $KEY" \\
          -d '{"text": "Hello", "voice": "en-US-JennyNeural"}'
        curl --fail-with-body -X POST "$APP/calls" -d "{\\"targets\\": [{\\"to\\": \\"$TARGET\\"}]}"
        ```

        <!-- doctest: run -->
        ```bash
        curl -s http://127.0.0.1:8090/__sim/calls
        ```
        """,
    )
    problems = [p for b in page.blocks for p in block_problems(b)]
    where = tmp_path / "page.md"
    assert any(p.startswith(f"{where}:2: POST /api/calls/{{call_connection_id}}/play: openapi.json") for p in problems)
    assert not any("/api/calls:" in p for p in problems), problems  # a variable stands for any value
    assert any(p.startswith(f"{where}:9: curl without --fail-with-body") for p in problems), problems


def test_marked_documents_are_read_with_the_projects_parsers(tmp_path):
    page = page_of(
        tmp_path,
        """
        <!-- doctest: json flows -->
        ```json
        {"f": {"start": "a", "nodes": {"a": {"type": "play", "prompt": {"text": "Hi"}, "next": "missing"}}}}
        ```

        <!-- doctest: json routing -->
        ```json
        {"rules": [], "default": {"type": "answer"}}
        ```

        <!-- doctest: yaml scenario -->
        ```yaml
        calls:
          - {from: "+14255550042", to: "+18005550123", script: [{on: recognize, pres: "1"}]}
        ```

        <!-- doctest: json request POST /api/calls -->
        ```json
        {"targets": []}
        ```

        <!-- doctest: json routing -->
        ```json
        {"rules": [], "default": {"type": "answer", "flow": "customer_service"}}
        ```
        """,
    )
    problems = {b.line: block_problems(b) for b in page.blocks}
    assert "missing" in " ".join(problems[2]), problems[2]
    assert problems[7] and "json routing" in problems[7][0]
    assert problems[12] and "pres" in problems[12][0], problems[12]
    assert problems[18] and "targets" in problems[18][0]
    assert problems[23] == []


# -- running a page ------------------------------------------------------------------------------------------------


def test_a_pages_blocks_run_in_one_session_in_a_copy_of_the_repo(tmp_path):
    page = page_of(
        tmp_path,
        """
        <!-- doctest: run -->
        ```bash
        GREETING=hello
        test -f function_app.py && test ! -e local.settings.json
        ```

        <!-- doctest: run -->
        ```bash
        echo "$GREETING from $(pwd)" > greeting.txt
        cat greeting.txt
        ```
        """,
    )
    done = run_page(page)
    assert "hello from /" in done.output and "/repo" in done.output


def test_a_failing_block_is_named_with_its_line_and_its_output(tmp_path):
    page = page_of(
        tmp_path,
        """
        <!-- doctest: run -->
        ```bash
        echo first
        ```

        Then:

        <!-- doctest: run -->
        ```bash
        echo "before the failure"
        false
        echo "never printed"
        ```
        """,
    )
    with pytest.raises(DocTestFailure) as failed:
        run_page(page)
    message = str(failed.value)
    assert message.startswith(f"{tmp_path / 'page.md'}:9: the block failed (exit status 1)")
    assert "before the failure" in message and "never printed" not in message and "first" not in message


def test_a_background_block_is_waited_for_and_stopped(tmp_path):
    port = free_port()
    page = page_of(
        tmp_path,
        f"""
        <!-- doctest: background wait={port} -->
        ```bash
        .venv/bin/python -m http.server --bind 127.0.0.1 {port}
        ```

        <!-- doctest: run -->
        ```bash
        curl --fail-with-body -s -o /dev/null http://127.0.0.1:{port}/README.md && echo served
        ```
        """,
    )
    done = run_page(page)
    assert "served" in done.output
    assert not in_use(port)


def test_a_server_that_exits_or_a_port_in_use_fails_clearly(tmp_path):
    port = free_port()
    page = page_of(
        tmp_path,
        f"""
        <!-- doctest: background wait={port} -->
        ```bash
        echo "no such server"; exit 3
        ```
        """,
    )
    with pytest.raises(DocTestFailure) as failed:
        run_page(page)
    assert ":2: the block failed" in str(failed.value)
    assert f"exited before port {port} listened" in str(failed.value) and "no such server" in str(failed.value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(DocTestFailure, match=f"port {port} in use: stop what runs there"):
            run_page(page)


def test_a_block_that_hangs_is_stopped_at_the_timeout(tmp_path):
    page = page_of(tmp_path, "<!-- doctest: run -->\n```bash\necho waiting\nsleep 60\n```\n")
    with pytest.raises(DocTestFailure, match="timed out after 2s") as failed:
        run_page(page, timeout=2)
    assert "waiting" in str(failed.value)
