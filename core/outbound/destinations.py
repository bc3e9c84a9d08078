"""Where the app may make ACS ring someone: the dialing policy, the defence against toll fraud.

Whoever holds a function key can place calls, and a flow may take its target from a call variable: without a
policy, that rings premium-rate and international numbers at the owner's expense (International Revenue Share
Fraud). ``DestinationPolicy.check`` runs on every path that rings someone: the control API (call, add participant,
transfer), campaigns (at the request and at each dial), masking sessions (both parties), the routing rules' and
flows' targets (at start-up) and the executor (every Transfer and AddParticipant, so a target filled in from a call
variable is checked too). Pure: no SDK, no storage. The daily cap on calls placed is ``core.outbound.dial_cap``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.calls.identifiers import PHONE_PREFIX, InvalidIdentifier, phone_number

MIN_DIGITS = 7  # the shortest number dialable across countries (E.164 allows shorter country codes alone)
NANP = re.compile(r"\+1[2-9]\d{2}[2-9]\d{6}")
PREFIX = re.compile(r"\+\d{0,14}")
# Raw ids of identities that no phone network carries (ACS users, Teams users and apps, in every cloud).
NON_PHONE_KINDS = (
    "8:acs:",
    "8:spool:",
    "8:dod-acs:",
    "8:gcch-acs:",
    "8:orgid:",
    "8:dod:",
    "8:gcch:",
    "8:teamsvisitor:",
    "28:orgid:",
    "28:dod:",
    "28:gcch:",
)

# The defaults (sources: docs/security.md and docs/control-api.md):
# - allowed: ``+1`` (North America: the countries of the numbers ACS sells in the US and Canada);
# - denied: NANP premium rate (+1 900), the NANP area codes of other countries in the Caribbean and the Atlantic,
#   which are charged as international calls and are the classic targets of "one ring" and IRSF fraud (FCC
#   consumer alert on one-ring scams; NANPA's list of NANP countries), and, for deployments that widen the
#   allowed list, the ITU's international premium-rate and shared-cost codes and the satellite and
#   international-network codes (ITU-T E.164 list of assigned country codes). US territories (Puerto Rico
#   +1 787/939, USVI +1 340, Guam +1 671, CNMI +1 670, American Samoa +1 684) are domestic-rate and stay allowed.
NANP_PREMIUM = ("+1900",)
# Countries in the North American Numbering Plan outside the US and Canada: international rates from a US number.
NANP_INTERNATIONAL = (
    "+1242",  # Bahamas
    "+1246",  # Barbados
    "+1264",  # Anguilla
    "+1268",  # Antigua and Barbuda
    "+1284",  # British Virgin Islands
    "+1345",  # Cayman Islands
    "+1441",  # Bermuda
    "+1473",  # Grenada
    "+1649",  # Turks and Caicos Islands
    "+1658",  # Jamaica
    "+1664",  # Montserrat
    "+1721",  # Sint Maarten
    "+1758",  # Saint Lucia
    "+1767",  # Dominica
    "+1784",  # Saint Vincent and the Grenadines
    "+1809",  # Dominican Republic
    "+1829",  # Dominican Republic
    "+1849",  # Dominican Republic
    "+1868",  # Trinidad and Tobago
    "+1869",  # Saint Kitts and Nevis
    "+1876",  # Jamaica
)
# ITU-T E.164 codes that are premium, shared-cost, satellite or international networks (no country's tariff).
INTERNATIONAL_PREMIUM = ("+808", "+870", "+881", "+882", "+883", "+888", "+979", "+991")
DEFAULT_ALLOWED = ("+1",)
DEFAULT_DENIED = NANP_PREMIUM + NANP_INTERNATIONAL + INTERNATIONAL_PREMIUM


class DestinationRefused(Exception):
    """A destination the policy does not let the app ring. ``status_code`` 403 marks it as a refusal for good
    (the runtime records it and moves on instead of retrying); ``reason`` never holds the whole number."""

    status_code = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = f"destination refused: {reason}"


def masked(number: str) -> str:
    """A number as a reason or a log may show it: its last four digits, the rest hidden."""
    return "…" + number[-4:] if len(number) > 4 else "…"


def phone_of(target: str) -> str | None:
    """The number a target rings (``+...`` or ``4:...``, well formed or not: ``check`` vets it), or None for an
    identity that is no phone."""
    try:
        return phone_number(target)
    except InvalidIdentifier:
        return target.removeprefix(PHONE_PREFIX)


def parse_prefixes(value: str) -> tuple[str, ...]:
    """A comma-separated list of ``+`` and digits (``+`` alone: every number); ``none``: an empty list."""
    if value.strip().lower() == "none":
        return ()
    prefixes = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in prefixes if not PREFIX.fullmatch(p)]
    if bad:
        raise ValueError(f"{', '.join(bad)} not a prefix: + followed by up to 14 digits")
    return prefixes


def _longest(number: str, prefixes: tuple[str, ...]) -> str | None:
    matching = [p for p in prefixes if number.startswith(p)]
    return max(matching, key=len) if matching else None


# What is a phone number: ``+`` and 7 to 15 digits (E.164), or the raw id ``4:`` of one; a ``4:`` id that is not
# ``4:+E.164`` is refused (it must never pass as "not a phone"). A ``+1`` number must be a North American number
# (10 digits: area code and exchange not starting with 0 or 1). ACS and Teams identities (``8:acs:``,
# ``8:orgid:``, ...) reach no phone network and cost nothing per minute: they are allowed. Any other raw id is
# refused, since the service might read it as something that rings.
#
# Which numbers: the longest prefix of ``DIAL_ALLOWED_PREFIXES`` or ``DIAL_DENIED_PREFIXES`` that a number starts
# with decides; a number neither list covers is refused, and a tie goes to the denial. So the default, ``+1``
# allowed and ``+1900`` denied, refuses +1 900 numbers; adding ``+1900555`` to the allowed list would let that
# range through.
@dataclass(frozen=True)
class DestinationPolicy:
    allowed: tuple[str, ...] = DEFAULT_ALLOWED
    denied: tuple[str, ...] = DEFAULT_DENIED

    def check(self, target: str) -> None:
        """Return if the app may ring ``target`` (+E.164, a raw id); else raise ``DestinationRefused``."""
        try:
            number = phone_number(target)
        except InvalidIdentifier:
            number = ""
        if number is None:
            kind = next((k for k in NON_PHONE_KINDS if target.startswith(k)), None)
            if kind is not None and len(target) > len(kind):
                return  # an ACS or Teams identity: no phone network, no per-minute charge
            raise DestinationRefused("not a phone number (+E.164 or 4:+E.164) nor an ACS or Teams identity")
        if len(number) - 1 < MIN_DIGITS:
            raise DestinationRefused(
                "a phone number is + and 7 to 15 digits (E.164)"
                + ("; a 4: raw id is 4:+E.164" if target.startswith("4:") else "")
            )
        if number.startswith("+1") and not NANP.fullmatch(number):
            raise DestinationRefused("a +1 number has 10 digits, its area code and exchange not starting with 0 or 1")
        allow = _longest(number, self.allowed)
        deny = _longest(number, self.denied)
        if deny is not None and (allow is None or len(deny) >= len(allow)):
            raise DestinationRefused(f"{deny} numbers are denied (DIAL_DENIED_PREFIXES: premium or international)")
        if allow is None:
            shown = ", ".join(self.allowed) or "none"
            raise DestinationRefused(f"the number is outside the allowed prefixes {shown} (DIAL_ALLOWED_PREFIXES)")

    def allows(self, target: str) -> bool:
        try:
            self.check(target)
        except DestinationRefused:
            return False
        return True


DEFAULT_POLICY = DestinationPolicy()


def fill_targets(targets: list[tuple[str, str]], values: dict[str, str]) -> list[tuple[str, str]]:
    """``(where, to)`` pairs with the call variables filled in; a target still naming an unknown variable is left
    out (it is known only once the call sets it, and is checked then, by the executor)."""
    from core.flows.engine import fill

    out = []
    for where, to in targets:
        filled = fill(to, values) or to
        if "{" not in filled:
            out.append((where, filled))
    return out


def flow_targets(flow: object) -> list[tuple[str, str]]:
    """``(node id, to)`` of every node of a flow that rings someone (transfer, add_participant)."""
    nodes = getattr(flow, "nodes", {})
    return [(node_id, node.target.to) for node_id, node in nodes.items() if getattr(node, "target", None) is not None]
