"""Targets the app may ring: phone numbers in E.164, and raw ids of the kinds ACS defines, checked before they
become identifiers.

A phone number comes in two spellings: ``+14255550100`` and its raw id ``4:+14255550100``. Both must be
checked the same way, or a policy on numbers (allowed countries, denied premium ranges) is skipped by the
second (``4:+1900...``): ``phone_number`` gives the E.164 number of either, and refuses a phone target that
is not one. ``check_target`` checks any target before the app turns it into an identifier
(``core.calls.executor.identifier``, routing's redirect targets, the control API's targets).
"""

from __future__ import annotations

import re

E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ITU-T E.164: a country code and at most 15 digits in all
PHONE_PREFIX = "4:"
MAX_TARGET = 256
UNSAFE = frozenset("/\\#?")  # never in an ACS raw id; they would reach table keys and URLs


class InvalidIdentifier(ValueError):
    """A target that is no phone number in E.164 and no raw id ACS would take; the message says why.
    ``status_code`` 400 marks it as a refusal for good: the runtime records it instead of retrying the event."""

    status_code = 400


def phone_number(target: str) -> str | None:
    """The E.164 number a target names (``+1...`` or ``4:+1...``); None when it names no phone (a user, a bot);
    ``InvalidIdentifier`` when it names a phone in any other form (spaces, letters, no ``+``, too long)."""
    if not isinstance(target, str):
        raise InvalidIdentifier(f"a target must be a string, not {type(target).__name__}")
    if target.startswith(PHONE_PREFIX):
        number = target[len(PHONE_PREFIX) :]
    elif target.startswith("+") or (target[:1].isdigit() and ":" not in target):
        number = target
    else:
        return None
    if not E164.fullmatch(number):
        raise InvalidIdentifier(f"{_shown(target)} is not a phone number in E.164 (+ and up to 15 digits)")
    return number


def check_target(target: str) -> str:
    """``target`` itself when the app may turn it into an identifier: an E.164 number (either spelling) or a raw
    id of printable ASCII with a kind prefix (``8:acs:...``, ``8:orgid:...``, ``28:...``); else
    ``InvalidIdentifier``."""
    if phone_number(target) is not None:
        return target
    if not target or len(target) > MAX_TARGET or not (target.isascii() and target.isprintable()):
        raise InvalidIdentifier(f"{_shown(target)} is not a raw id (printable ASCII, at most {MAX_TARGET} characters)")
    if UNSAFE & set(target) or " " in target:
        raise InvalidIdentifier(f"{_shown(target)} holds characters no raw id holds (space / \\ # ?)")
    kind, colon, rest = target.partition(":")
    if not colon or not kind.isdigit() or not rest:
        raise InvalidIdentifier(f"{_shown(target)} is not a raw id (kind:id, e.g. 8:acs:...)")
    return target


def _shown(target: object) -> str:
    text = repr(target)
    return text if len(text) <= 40 else text[:37] + "..."
