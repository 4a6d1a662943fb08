"""The world's time: its epoch, instants as whole seconds since EPOCH_START, and days.

The world starts at EPOCH; an instant is a whole second since EPOCH_START (naive UTC), and `as_of=None`
is the end of time, after every transition. Records carry naive-UTC `datetime`s, those of a day shared
rather than built per record.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

EPOCH = date(2020, 1, 1)
EPOCH_START = datetime(2020, 1, 1)
SECONDS_PER_DAY = 86_400
LAST_SECOND = SECONDS_PER_DAY - 1
_END_OF_TIME = (date(9999, 1, 1) - EPOCH).days * SECONDS_PER_DAY  # as_of=None: after every transition


def to_naive_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to naive UTC; naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _to_second(moment: datetime | None) -> int:
    """Whole seconds since EPOCH_START (floored); None is the end of time."""
    if moment is None:
        return _END_OF_TIME
    delta = to_naive_utc(moment) - EPOCH_START
    return delta.days * SECONDS_PER_DAY + delta.seconds


def _moment(second: int) -> datetime:
    return EPOCH_START + timedelta(seconds=second)


def _days(first: date, last: date) -> Iterator[date]:
    """The days from `first` to `last` inclusive, none before EPOCH."""
    day = max(first, EPOCH)
    while day <= last:
        yield day
        day += timedelta(days=1)


def _day_of(second: int) -> date:
    return EPOCH + timedelta(days=second // SECONDS_PER_DAY)


class _DaySeconds(dict):
    """Second of a day -> datetime, built on first use and then shared by all records of that day.

    A dict with __missing__ keeps lookups at C speed while small scales only pay for the seconds they use.
    """

    __slots__ = ("start",)

    def __init__(self, day: date) -> None:
        super().__init__()
        self.start = datetime(day.year, day.month, day.day)

    def __missing__(self, second: int) -> datetime:
        moment = self[second] = self.start + timedelta(seconds=second)
        return moment


@lru_cache(maxsize=8)
def _day_seconds(day: date) -> _DaySeconds:
    return _DaySeconds(day)
