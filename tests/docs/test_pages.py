"""Each page of the README, docs/, infra/ and examples/: its markers are valid and complete, its marked blocks
(flows, routing rules, scenarios, request bodies, every curl's body to /api/...) pass the app's own parsers, and
its run and background blocks run, in order, in one bash session in a fresh copy of the repository."""

from __future__ import annotations

import pytest

from tests.docs.markdown import display, pages, parse_page
from tests.docs.runner import DocTestFailure, run_page
from tests.docs.validate import block_problems

pytestmark = pytest.mark.docs

PAGES = [parse_page(p) for p in pages()]
# Pages that start their own servers on the fixed ports run first; those on the shared stack last (the stack holds
# the ports until this module ends).
RUNNABLE = sorted((p for p in PAGES if p.runs), key=lambda p: (p.stack, str(p.path)))


@pytest.mark.parametrize("page", PAGES, ids=[display(p.path) for p in PAGES])
def test_markers(page):
    """Every bash/sh/shell/console/json/yaml block has a valid marker on the line before it."""
    if page.problems:
        pytest.fail("\n".join(page.problems), pytrace=False)


@pytest.mark.parametrize("page", PAGES, ids=[display(p.path) for p in PAGES])
def test_blocks_and_request_bodies(page):
    """Marked flows, routing rules, scenarios and request bodies, and every curl's JSON body to /api/... (run or
    not), as the app and the simulator read them; curls in run blocks fail on an HTTP error."""
    problems = [p for block in page.blocks for p in block_problems(block)]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", RUNNABLE, ids=[display(p.path) for p in RUNNABLE])
def test_page_runs(page, request):
    """The page's run and background blocks, verbatim, in order (on the stack for pages marked ``stack``)."""
    env = request.getfixturevalue("doc_stack").env if page.stack else None
    failure = None
    try:
        run_page(page, env)
    except DocTestFailure as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
