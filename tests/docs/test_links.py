"""Every relative link of the README, docs/, infra/ and examples/ names a file that exists and a heading it has."""

from __future__ import annotations

import textwrap

import pytest

from tests.docs.links import link_problems, slug
from tests.docs.markdown import display, pages

pytestmark = pytest.mark.docs

PAGES = pages()


@pytest.mark.parametrize("page", PAGES, ids=[display(p) for p in PAGES])
def test_links(page):
    problems = link_problems(page)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_slugs_are_githubs():
    assert slug("Settings: `local.settings.json`") == "settings-localsettingsjson"
    assert slug("The control API (`/__sim/...`)") == "the-control-api-__sim"
    assert slug("`POST /__sim/calls`: a scripted caller") == "post-__simcalls-a-scripted-caller"
    assert slug("A month at 1,000 and 100,000 calls") == "a-month-at-1000-and-100000-calls"


def test_a_missing_file_a_missing_heading_and_a_repeated_heading(tmp_path):
    write(tmp_path / "other.md", """
        # Other
        ## Notes
        ## Notes
        """)
    page = write(tmp_path / "page.md", """
        # Page
        See [other](other.md#notes-1), [the first](other.md#notes), [here](#page) and [out](https://example.com/x).
        [gone](missing.md) and [no such heading](other.md#nope).
        `[in code](nowhere.md)`
        ```text
        [in a block](nowhere.md)
        ```
        """)
    assert link_problems(page, root=tmp_path) == [
        f"{page}:3: missing.md: no such file",
        f"{page}:3: other.md#nope: {tmp_path / 'other.md'} has no heading #nope",
    ]
