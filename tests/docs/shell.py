"""Just enough of bash's word splitting to find the curl commands of a block and read their arguments.

Quotes, backslashes, comments, line continuations, command separators and ``$(...)`` (scanned as commands of
their own) are handled; variables stay as written (``$APP``, ``${ID}``) for the caller to substitute. A
doc's curl is read statically, so a body is checked even in a block that is never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SEPARATORS = {";", "|", "&", "(", ")", "\n"}
# curl options that take a value (the next word, or the rest of a short-option cluster).
VALUED_SHORT = set("dHXouwmFeAbcTxKrEDzYyCQ")
VALUED_LONG = {
    "--data", "--data-raw", "--data-binary", "--data-ascii", "--data-urlencode", "--json", "--header", "--request",
    "--output", "--write-out", "--max-time", "--connect-timeout", "--retry", "--retry-delay", "--retry-max-time",
    "--user", "--url", "--user-agent", "--cookie", "--form", "--referer", "--proxy", "--cacert", "--resolve",
    "--config", "--range", "--upload-file", "--dump-header", "--variable", "--expand-data", "--expand-url",
}
DATA = {"-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--json"}
FAIL = {"-f", "--fail", "--fail-with-body"}


def commands(text: str) -> list[list[str]]:
    """The simple commands of a shell text, each a list of words (quotes removed, variables kept)."""
    out: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    skip_word = False  # the next word is a redirection's target
    heredocs: list[str] = []  # delimiters of here-documents whose bodies start at the next line
    i, n = 0, len(text)

    def end_word() -> None:
        nonlocal in_word, skip_word
        if in_word:
            if not skip_word:
                words.append("".join(word))
            skip_word = False
            word.clear()
            in_word = False

    def end_command() -> None:
        end_word()
        if words:
            out.append(list(words))
            words.clear()

    def substitution(start: int) -> int:
        """Scan ``$(`` at ``start`` to its closing parenthesis; its commands join ``out``; the index after."""
        depth, k, quote = 0, start + 1, ""
        while k < n:
            c = text[k]
            if quote:
                if c == "\\" and quote == '"':
                    k += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        out.extend(commands(text[start + 2 : k]))
        return k + 1

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] == "\n":  # a line continuation
                i += 2
                continue
            word.append(text[i + 1])
            in_word = True
            i += 2
        elif c == "'":
            k = text.find("'", i + 1)
            k = n if k < 0 else k
            word.append(text[i + 1 : k])
            in_word = True
            i = k + 1
        elif c == '"':
            in_word = True
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\$`\n':
                    if text[i + 1] != "\n":
                        word.append(text[i + 1])
                    i += 2
                elif text.startswith("$(", i):
                    i = substitution(i)
                    word.append("$__SUBSTITUTION")
                else:
                    word.append(text[i])
                    i += 1
            i += 1
        elif text.startswith("$(", i):
            i = substitution(i)
            word.append("$__SUBSTITUTION")
            in_word = True
        elif c == "#" and not in_word:
            k = text.find("\n", i)
            i = n if k < 0 else k
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            end_word()
            m = re.match(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", text[i:])
            if m:
                heredocs.append(m[2])
                i += m.end()
            else:
                i += 2
        elif c in "<>":
            if in_word and "".join(word).isdigit():  # 2>file: the descriptor, not a word
                word.clear()
                in_word = False
            end_word()
            m = re.match(r"[<>]+&?-?[0-9]*", text[i:])
            i += m.end() if m else 1
            if not (m and re.search(r"&[0-9-]", m.group())):
                skip_word = True
        elif c == "\n" and heredocs:
            end_command()
            k = i + 1
            for delimiter in heredocs:
                while k < n:
                    e = text.find("\n", k)
                    e = n if e < 0 else e
                    line, k = text[k:e], e + 1
                    if line.strip() == delimiter:
                        break
            heredocs.clear()
            i = k
        elif c in SEPARATORS:
            end_command()
            i += 1
        elif c in " \t":
            end_word()
            i += 1
        else:
            word.append(c)
            in_word = True
            i += 1
    end_command()
    return out


@dataclass
class Curl:
    """A curl command as written: its URLs, method, data bodies and whether it fails on an HTTP error."""

    words: list[str]
    urls: list[str] = field(default_factory=list)
    method: str = ""
    bodies: list[str] = field(default_factory=list)
    fails: bool = False


def _command_word(words: list[str]) -> int | None:
    """Where the command's name is, past ``VAR=value`` assignments and ``env``/``time``/``command``."""
    k = 0
    while k < len(words) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[k]) or words[k] in ("env", "time")):
        k += 1
    return k if k < len(words) else None


def curls(text: str) -> list[Curl]:
    """Every curl command in a shell text, its arguments read as curl reads them."""
    found = []
    for words in commands(text):
        k = _command_word(words)
        if k is None or words[k] != "curl":
            continue
        curl = Curl(words[k:])
        args = words[k + 1 :]
        j = 0
        while j < len(args):
            arg = args[j]
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                if name in VALUED_LONG:
                    if not eq:
                        j += 1
                        value = args[j] if j < len(args) else ""
                    if name in DATA:
                        curl.bodies.append(value)
                    elif name == "--request":
                        curl.method = value.upper()
                    elif name == "--url":
                        curl.urls.append(value)
                elif name in FAIL:
                    curl.fails = True
            elif arg.startswith("-") and len(arg) > 1:
                for pos, flag in enumerate(arg[1:], start=1):
                    if flag == "f":
                        curl.fails = True
                    if flag in VALUED_SHORT:
                        value = arg[pos + 1 :]
                        if not value:
                            j += 1
                            value = args[j] if j < len(args) else ""
                        if flag == "d":
                            curl.bodies.append(value)
                        elif flag == "X":
                            curl.method = value.upper()
                        break
            else:
                curl.urls.append(arg)
            j += 1
        if not curl.method:
            curl.method = "POST" if curl.bodies else "GET"
        found.append(curl)
    return found
