"""The listing filters of the shop API: the one that selects a partition of a table (`day_filter`), and the
one that selects the records changed in a window (`changes_filter`, for change capture).

How a day is selected, so that late records land in the right partition:
- A partition is a business day. Fact tables are asked for by their business date (`date=`: the day of
  `ordered_at` / `paid_at`), changing dimensions by the day their version was written (`updated_since` /
  `updated_before`); see `day_filter`. An order placed on D is in partition D whenever it reaches the
  source, never in the day it arrived.
- No cursor survives a run: every extraction of a partition re-reads that whole day and the raw layer
  replaces the partition. A record that reached the source after D was first extracted is picked up by the
  next extraction of D, which the daily schedule does for the last `partitions.LOOKBACK_DAYS` days.
"""

from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day

from pipeline_project.quality.contracts import BUSINESS_DATE, DAILY_VERSIONS, RAW_CONTRACTS

DATE_FILTERED = {name for name, contract in RAW_CONTRACTS.items() if contract.day_selection == BUSINESS_DATE}
UPDATED_FILTERED = {name for name, contract in RAW_CONTRACTS.items() if contract.day_selection == DAILY_VERSIONS}
# What the source keeps of its dimensions (customers, products): a version per day, or the current state only.
DIMENSION_MODES = ("daily_versions", "current_state")


def iso_z(moment: datetime) -> str:
    """A naive-UTC or aware datetime as the API's timestamp text (second precision, `Z`)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_filter(table: str, day: date, dimensions: str = "daily_versions") -> dict[str, str]:
    """The listing filter that selects one partition of `table`.

    Fact tables: their business date. Dimensions with a version per day: the versions written during the
    day. Dimensions kept as current state only: every record changed since the day began, in its current
    version, because the source no longer knows the day's version of a record changed later; so a re-read
    of the day can only gain records, and none ever disappears from the raw layer.
    """
    if table in DATE_FILTERED:
        return {"date": day.isoformat()}
    if table in UPDATED_FILTERED:
        start = datetime.combine(day, time_of_day.min)
        if dimensions == "current_state":
            return {"updated_since": iso_z(start)}
        return {"updated_since": iso_z(start), "updated_before": iso_z(start + timedelta(days=1))}
    raise ValueError(f"table {table!r} is not served by the shop API")


def changes_filter(since: datetime, before: datetime) -> dict[str, str]:
    """The listing filter of the records whose current version changed in [since, before)."""
    return {"updated_since": iso_z(since), "updated_before": iso_z(before)}
