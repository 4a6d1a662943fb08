"""Data contracts: the pandera models every raw batch and every mart must satisfy.

Raw models gate ingestion (rows that break them are quarantined with the rule they broke); mart models
back the mart asset checks. Each mart rule carries a severity in its field metadata: ERROR rules block
downstream work, WARN rules are reported but do not block. Models are strict (no unexpected columns) and
never coerce, so type drift is reported instead of being silently cast away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import Decimal
from pandera.errors import SchemaErrors

ORDER_STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
CHANNELS = ["web", "mobile", "marketplace"]
PAYMENT_METHODS = ["card", "paypal", "bank_transfer", "gift_card"]
PAYMENT_STATUSES = ["captured", "failed", "refunded"]
LOYALTY_TIERS = ["bronze", "silver", "gold", "platinum"]
EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "checkout_started", "purchase"]

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"

ERROR = "ERROR"
WARN = "WARN"


CURRENCY = {"dtype_kwargs": {"precision": 18, "scale": 2}}


def _warn(personal: bool = False, **kwargs) -> dict:
    """Field options for a column whose value checks only warn (severity lives in the column metadata);
    `personal` marks a column holding personal data, which samples of failing rows mask."""
    return {"metadata": {"severity": WARN, "personal": personal}, **kwargs}


class Contract(pa.DataFrameModel):
    """Base of every contract: no unexpected columns, and no coercion that would hide type drift."""

    class Config:
        strict = True
        coerce = False


# ---------------------------------------------------------------------------------------------- raw
# C0 controls but tab, line feed and carriage return; DEL; C1 controls. A NUL or an escape sequence in a text
# value breaks exports and terminals downstream, and never belongs in shop data.
CONTROL_CHARACTERS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"


class RawContract(Contract):
    """Base of the raw contracts: on top of each column's rules, no text value holds a control character."""

    @pa.check(".*", regex=True, name="no_control_characters")
    def no_control_characters(cls, data) -> pl.LazyFrame:
        if data.lazyframe.collect_schema()[data.key] != pl.String:
            return data.lazyframe.select(pl.lit(True).alias(data.key))
        return data.lazyframe.select(~pl.col(data.key).str.contains(CONTROL_CHARACTERS).fill_null(False))


class RawCustomers(RawContract):
    customer_id: int = pa.Field(ge=1)
    email: str = pa.Field(str_matches=EMAIL_PATTERN)
    full_name: str = pa.Field(str_length={"min_value": 1})
    country: str = pa.Field(str_length={"min_value": 2, "max_value": 2})
    city: str = pa.Field()
    loyalty_tier: str = pa.Field(isin=LOYALTY_TIERS)
    marketing_opt_in: bool = pa.Field()
    signup_at: pl.Datetime = pa.Field()
    updated_at: pl.Datetime = pa.Field()


class RawProducts(RawContract):
    product_id: int = pa.Field(ge=1)
    sku: str = pa.Field(str_length={"min_value": 1})
    product_name: str = pa.Field()
    category: str = pa.Field()
    unit_price_cents: int = pa.Field(gt=0)
    stock_quantity: int = pa.Field(ge=0)
    is_active: bool = pa.Field()
    updated_at: pl.Datetime = pa.Field()


class RawOrders(RawContract):
    order_id: int = pa.Field(ge=1)
    customer_id: int = pa.Field(ge=1)
    order_status: str = pa.Field(isin=ORDER_STATUSES)
    channel: str = pa.Field(isin=CHANNELS)
    currency: str = pa.Field(str_length={"min_value": 3, "max_value": 3})
    ordered_at: pl.Datetime = pa.Field()
    updated_at: pl.Datetime = pa.Field()


class RawOrderItems(RawContract):
    order_item_id: int = pa.Field(ge=1)
    order_id: int = pa.Field(ge=1)
    product_id: int = pa.Field(ge=1)
    quantity: int = pa.Field(gt=0)
    unit_price_cents: int = pa.Field(gt=0)
    discount_cents: int = pa.Field(ge=0)
    ordered_at: pl.Datetime = pa.Field()
    updated_at: pl.Datetime = pa.Field()


class RawPayments(RawContract):
    payment_id: int = pa.Field(ge=1)
    order_id: int = pa.Field(ge=1)
    payment_method: str = pa.Field(isin=PAYMENT_METHODS)
    payment_status: str = pa.Field(isin=PAYMENT_STATUSES)
    amount_cents: int = pa.Field(ge=0)
    paid_at: pl.Datetime = pa.Field()
    updated_at: pl.Datetime = pa.Field()


class RawWebEvents(RawContract):
    event_id: str = pa.Field(str_length={"min_value": 1})
    session_id: str = pa.Field(str_length={"min_value": 1})
    customer_id: int = pa.Field(ge=1, nullable=True)
    event_type: str = pa.Field(isin=EVENT_TYPES)
    product_id: int = pa.Field(ge=1, nullable=True)
    page_path: str = pa.Field()
    occurred_at: pl.Datetime = pa.Field()


# How a day's partition is selected at the source (see `listing_filters.day_filter`).
BUSINESS_DATE = "business_date"  # records of the day their business date falls on; changes later are captured
DAILY_VERSIONS = "daily_versions"  # the versions written during the day (a dimension with history)
LANDING_DAY = "landing_day"  # the files dropped into the day's landing folder


@dataclass(frozen=True)
class RawTableContract:
    """One source table, declared once: its contract, where it comes from, how a day of it is selected, its
    key and business date, and (for money tables) the amount its control total sums."""

    name: str
    model: type[pa.DataFrameModel]
    primary_key: str
    timestamp_columns: tuple[str, ...]
    day_selection: str
    business_date_column: str
    amount: Callable[[], pl.Expr] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.model.to_schema().columns)

    @property
    def from_landing_files(self) -> bool:
        return self.day_selection == LANDING_DAY

    @property
    def amount_expression(self) -> pl.Expr | None:
        return None if self.amount is None else self.amount()

    @property
    def arrival_schema(self) -> dict[str, pl.DataType]:
        """Polars types to read JSON into: timestamps arrive as ISO strings and are parsed afterwards."""
        schema = {}
        for name, column in self.model.to_schema().columns.items():
            schema[name] = pl.String if name in self.timestamp_columns else column.dtype.type
        return schema


RAW_CONTRACTS: dict[str, RawTableContract] = {
    contract.name: contract
    for contract in [
        RawTableContract(
            "customers", RawCustomers, "customer_id", ("signup_at", "updated_at"), DAILY_VERSIONS, "updated_at"
        ),
        RawTableContract("products", RawProducts, "product_id", ("updated_at",), DAILY_VERSIONS, "updated_at"),
        RawTableContract("orders", RawOrders, "order_id", ("ordered_at", "updated_at"), BUSINESS_DATE, "ordered_at"),
        RawTableContract(
            "order_items",
            RawOrderItems,
            "order_item_id",
            ("ordered_at", "updated_at"),
            BUSINESS_DATE,
            "ordered_at",
            amount=lambda: pl.col("quantity") * pl.col("unit_price_cents") - pl.col("discount_cents"),
        ),
        RawTableContract(
            "payments",
            RawPayments,
            "payment_id",
            ("paid_at", "updated_at"),
            BUSINESS_DATE,
            "paid_at",
            amount=lambda: pl.col("amount_cents"),
        ),
        RawTableContract("web_events", RawWebEvents, "event_id", ("occurred_at",), LANDING_DAY, "occurred_at"),
    ]
}
# Rows per contract check and Parquet row group, wherever a partition streams (API listings, landing files,
# the raw layer's rewrites). Measured on 500k web events: 50k-row batches peak ~50 MB higher than 25k, while
# 10k-row batches spend 4x longer in per-batch validation overhead.
BATCH_ROWS = 25_000
API_TABLES = tuple(name for name, contract in RAW_CONTRACTS.items() if not contract.from_landing_files)
LANDING_TABLES = tuple(name for name, contract in RAW_CONTRACTS.items() if contract.from_landing_files)


# -------------------------------------------------------------------------------------------- marts
class DailyRevenueContract(Contract):
    order_date: pl.Date = pa.Field(unique=True)
    orders_count: int = pa.Field(ge=0)
    billable_orders_count: int = pa.Field(ge=0)
    items_sold: int = pa.Field(ge=0)
    gross_revenue: Decimal = pa.Field(ge=0, **CURRENCY)
    refunded_revenue: Decimal = pa.Field(ge=0, **CURRENCY)
    net_revenue: Decimal = pa.Field(ge=0, **CURRENCY)
    average_order_value: Decimal = pa.Field(nullable=True, **CURRENCY, **_warn(le=10_000))
    customers_count: int = pa.Field(ge=0)

    @pa.dataframe_check
    def net_is_gross_minus_refunds(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("gross_revenue") - pl.col("refunded_revenue") == pl.col("net_revenue"))

    @pa.dataframe_check
    def billable_within_orders(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("billable_orders_count") <= pl.col("orders_count"))

    @pa.dataframe_check
    def has_orders_every_day(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("orders_count") > 0)


class CustomerLifetimeValueContract(Contract):
    customer_id: int = pa.Field(ge=1, unique=True)
    email: str = pa.Field(nullable=True, **_warn(personal=True, str_matches=EMAIL_PATTERN))
    country: str = pa.Field(nullable=True)
    loyalty_tier: str = pa.Field(nullable=True, isin=LOYALTY_TIERS)
    orders_count: int = pa.Field(ge=0)
    lifetime_revenue: Decimal = pa.Field(ge=0, **CURRENCY)
    first_order_at: pl.Datetime = pa.Field(nullable=True)
    last_order_at: pl.Datetime = pa.Field(nullable=True)
    average_order_value: Decimal = pa.Field(nullable=True, **CURRENCY, **_warn(le=10_000))

    @pa.dataframe_check
    def first_order_not_after_last(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("first_order_at").is_null() | (pl.col("first_order_at") <= pl.col("last_order_at"))
        )

    @pa.dataframe_check
    def revenue_only_with_orders(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("orders_count") > 0) | (pl.col("lifetime_revenue") == 0))


@dataclass(frozen=True)
class MartContract:
    """A mart's model plus which of its table-level checks only warn.

    Column rules take their severity from the column's metadata (ERROR unless marked WARN); structural
    rules (columns, types, nulls, uniqueness) are always ERROR.
    """

    mart: str
    model: type[pa.DataFrameModel]
    warn_table_checks: frozenset[str] = frozenset()

    def severity(self, column: str | None, check: str) -> str:
        schema = self.model.to_schema()
        if column is None or column not in schema.columns:
            return WARN if check in self.warn_table_checks else ERROR
        if check in STRUCTURAL_CHECKS or check.startswith("dtype("):
            return ERROR
        return (schema.columns[column].metadata or {}).get("severity", ERROR)

    def is_personal(self, column: str | None) -> bool:
        columns = self.model.to_schema().columns
        return column in columns and bool((columns[column].metadata or {}).get("personal"))


STRUCTURAL_CHECKS = frozenset({"not_nullable", "field_uniqueness", "column_in_schema", "column_in_dataframe"})

MART_CONTRACTS: dict[str, MartContract] = {
    contract.mart: contract
    for contract in [
        MartContract("daily_revenue", DailyRevenueContract, frozenset({"has_orders_every_day"})),
        MartContract("customer_lifetime_value", CustomerLifetimeValueContract),
    ]
}


# ---------------------------------------------------------------------------------------- splitting
QUARANTINE_REASON = "_quarantine_reason"
# In quarantine rows: the values of the row that did not fit their column's type, as the source sent them (a JSON
# object of column -> value), since the quarantine's columns have the contract's types. Null for other rows.
REJECTED_VALUES = "_rejected_values"
TYPE_RULE = "dtype"


class ContractViolation(Exception):
    """A whole batch does not fit its contract (missing, unexpected or retyped columns): nothing is written."""


def rule_name(column: str | None, check: str) -> str:
    """A short, stable rule id such as `order_status:isin` or `table:net_is_gross_minus_refunds`."""
    return f"{column or 'table'}:{check.split('(')[0]}"


def failure_cases(model: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame:
    """Every rule a frame breaks, one row per (row index, rule); empty when the frame is valid."""
    try:
        model.validate(frame, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        return cases.with_columns(pl.when(pl.col("schema_context") == "Column").then(pl.col("column")).alias("column"))
    return pl.DataFrame(
        schema={
            "failure_case": pl.String,
            "schema_context": pl.String,
            "column": pl.String,
            "check": pl.String,
            "check_number": pl.Int32,
            "index": pl.Int32,
        }
    )


def split_batch(
    contract: RawTableContract,
    batch: pl.DataFrame,
    type_failures: pl.DataFrame | None = None,
    row_index: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a typed batch into rows that satisfy the contract and quarantined rows with their reasons.

    `type_failures` (index, column, value as JSON text; see `schema_drift.conform`) are values that could not
    be converted and are null in `batch`: their rows are quarantined with the rule `<column>:dtype` (not also
    `not_nullable` for the same column) and the values as sent in `REJECTED_VALUES`.
    With `row_index`, both frames carry each row's position in `batch` in a column of that name.
    Raises ContractViolation when the batch's shape itself is wrong, because then every row is suspect.
    """
    cases = failure_cases(contract.model, batch)
    structural = cases.filter(pl.col("index").is_null())
    if structural.height:
        problems = sorted(
            {f"{c['column'] or c['failure_case']}: {c['check']}" for c in structural.iter_rows(named=True)}
        )
        raise ContractViolation(f"{contract.name}: batch does not match its contract: {'; '.join(problems)}")
    if type_failures is None:
        type_failures = pl.DataFrame(schema={"index": pl.UInt32, "column": pl.String, "value": pl.String})
    indexed = batch.with_row_index("_row")
    if cases.is_empty() and type_failures.is_empty():
        nothing = indexed.clear().with_columns(
            pl.lit(None, dtype=pl.String).alias(QUARANTINE_REASON), pl.lit(None, dtype=pl.String).alias(REJECTED_VALUES)
        )
        return _with_row_index(indexed, row_index), _with_row_index(nothing, row_index)
    rules = cases.select(
        pl.col("index").cast(pl.UInt32),
        pl.coalesce(pl.col("column"), pl.lit("table")).alias("column"),
        pl.col("check").str.split("(").list.first().alias("check"),
    ).join(type_failures, on=["index", "column"], how="anti")
    rules = pl.concat([rules, type_failures.select("index", "column", pl.lit(TYPE_RULE).alias("check"))])
    reasons = (
        rules.select("index", rule=pl.concat_str("column", pl.lit(":"), "check"))
        .unique()
        .group_by("index")
        .agg(pl.col("rule").sort().str.join("; ").alias(QUARANTINE_REASON))
    )
    # Contract column names are identifiers, so they need no escaping as JSON keys.
    rejected = (
        type_failures.sort("column")
        .group_by("index")
        .agg(pl.concat_str(pl.lit('"'), "column", pl.lit('":'), "value").str.join(",").alias(REJECTED_VALUES))
        .select("index", pl.concat_str(pl.lit("{"), REJECTED_VALUES, pl.lit("}")).alias(REJECTED_VALUES))
    )
    valid = indexed.join(reasons, left_on="_row", right_on="index", how="anti")
    quarantined = indexed.join(reasons, left_on="_row", right_on="index", how="inner", maintain_order="left").join(
        rejected, left_on="_row", right_on="index", how="left", maintain_order="left"
    )
    return _with_row_index(valid, row_index), _with_row_index(quarantined, row_index)


def _with_row_index(frame: pl.DataFrame, name: str | None) -> pl.DataFrame:
    return frame.rename({"_row": name}) if name else frame.drop("_row")
