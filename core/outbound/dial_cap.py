"""The daily cap on calls the app places (setting ``DIAL_DAILY_CAP``): a second line against toll fraud and
runaway dialing, behind the destination policy (``core.outbound.destinations``).

What counts: every phone number (PSTN leg) the app dials at a caller's request (the control API's calls, additions
and transfers, each number a campaign calls). ACS and Teams identities cost nothing per minute and do not count;
neither do the flows' own transfers and invitations, whose targets are fixed by the settings or vetted when given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.platform import tables
from core.platform.tables import TableBacked

log = logging.getLogger("core.outbound.dial_cap")
PARTITION = "dialcap"


class DialCapReached(Exception):
    """The day's calls are all placed. ``status_code`` 429: a refusal, not a failure to retry at once."""

    status_code = 429

    def __init__(self, cap: int, retry_after: int) -> None:
        self.cap = cap
        self.retry_after = retry_after
        self.message = (
            f"daily cap of {cap} call(s) placed reached (DIAL_DAILY_CAP); it resets at 00:00 UTC, "
            f"in {retry_after} s"
        )
        super().__init__(self.message)


class DialCapBusy(Exception):
    """The day's row kept changing under this instance: try again."""


@dataclass(frozen=True)
class Taken:
    """Calls counted on one day's row (to give back if the service refuses them)."""

    day: str
    count: int


def seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()))


class _Gone(Exception):
    """The day's row is not there: nothing to give back."""


# One row per UTC day in the outbound table (``OUTBOUND_TABLE``, partition ``dialcap``), changed only by ETag
# compare-and-swap, so instances of a scaled-out app share one count and never pass the cap together. A number is
# counted before the service is asked to ring it; when the service refuses (a 4xx: nothing rang), it is given back,
# and a row given back to zero is removed (a refused request leaves no row behind). A placement retried after a
# failure may count twice: the cap errs on the side of fewer calls.
class DialCap(TableBacked):
    def __init__(self, table: Any, cap: int, attempts: int = 30) -> None:
        super().__init__(table)
        self.cap = cap
        self.attempts = attempts

    @staticmethod
    def day(now: datetime | None = None) -> str:
        return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")

    def _read(self, day: str) -> tuple[dict[str, Any], str | None]:
        """The day's row as it is written (a count of 0 and no ETag when there is none yet)."""
        entity = tables.get(self._table, PARTITION, day)
        row = {"PartitionKey": PARTITION, "RowKey": day, "count": 0}
        if entity is None:
            return row, None
        return row | {"count": int(entity.get("count") or 0)}, entity.metadata["etag"]

    def _write(self, row: dict[str, Any], etag: str | None) -> None:
        """Set the day's count (a row at zero is removed); ``tables.Conflict`` when it changed since it was read."""
        tables.put(self._table, row, etag, delete=etag is not None and row["count"] == 0)

    def used(self, now: datetime | None = None) -> int:
        self._ensure()
        return self._read(self.day(now))[0]["count"]

    def take(self, count: int = 1, now: datetime | None = None) -> Taken:
        """Count ``count`` calls placed today, or raise ``DialCapReached`` (nothing counted) if they do not fit."""
        now = now or datetime.now(UTC)
        day = self.day(now)
        if count <= 0:
            return Taken(day, 0)

        def add(row: dict[str, Any]) -> None:
            if row["count"] + count > self.cap:
                raise DialCapReached(self.cap, seconds_to_midnight(now.astimezone(UTC)))
            row["count"] += count

        self._ensure()
        tables.mutate(
            lambda: self._read(day),
            add,
            self._write,
            attempts=self.attempts,
            what=f"the dial count of {day}",
            gave_up=lambda _: DialCapBusy(f"the dial count of {day} kept changing: try again"),
            pause=tables.jitter(0.002, 0.01),
            logger=log,
        )
        return Taken(day, count)

    def give_back(self, taken: Taken) -> None:
        """The service refused the calls ``taken`` counted (nothing rang): uncount them. Best effort."""
        if taken.count <= 0:
            return

        def read() -> tuple[dict[str, Any], str]:
            row, etag = self._read(taken.day)
            if etag is None:
                raise _Gone()
            return row, etag

        def less(row: dict[str, Any]) -> None:
            row["count"] = max(0, row["count"] - taken.count)

        try:
            tables.mutate(
                read,
                less,
                self._write,
                attempts=self.attempts,
                what=f"the dial count of {taken.day}",
                gave_up=DialCapBusy,
                pause=lambda _: 0.0,
                logger=log,
            )
        except _Gone:
            return
        except DialCapBusy:
            log.warning("could not give back %d call(s) to the dial cap: the row kept changing", taken.count)
        except Exception as exc:  # storage trouble: the cap errs on the side of fewer calls
            log.warning("could not give back %d call(s) to the dial cap: %s", taken.count, exc)
