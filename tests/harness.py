"""What the tests share besides fixtures (those are in conftest.py): the demo source's token, its scale, the
days its landing files are written for, and the comparison of the marts with its ground truth."""

from datetime import date

TOKEN = "test-token-do-not-log"
# Small but non-trivial: ~200 orders and ~5,000 web events a day.
TEST_SCALE = 0.1
DAYS = [date(2026, 3, 14), date(2026, 3, 15)]


def assert_marts_equal_ground_truth(connection, world, days: list[date], marts: str = "marts") -> None:
    """The marts of `days` in schema `marts` (a DuckLake's: `lake.marts`) equal the demo world's ground truth:
    revenue and funnel per day, and lifetime value and product revenue summing to the net revenue."""
    for day in days:
        truth = world.ground_truth(day)
        revenue = connection.execute(
            "select orders_count, billable_orders_count, items_sold, gross_revenue * 100, "
            "refunded_revenue * 100, net_revenue * 100, customers_count "
            f"from {marts}.daily_revenue where order_date = ?",
            [day],
        ).fetchone()
        assert revenue == (
            truth["orders_count"],
            truth["billable_orders_count"],
            truth["items_sold"],
            truth["gross_revenue_cents"],
            truth["refunded_revenue_cents"],
            truth["net_revenue_cents"],
            truth["customers_count"],
        ), day
        funnel = connection.execute(
            "select sessions, product_view_sessions, add_to_cart_sessions, checkout_sessions, "
            f"purchase_sessions from {marts}.web_funnel where event_date = ?",
            [day],
        ).fetchone()
        assert funnel == (
            truth["sessions"],
            truth["product_view_sessions"],
            truth["add_to_cart_sessions"],
            truth["checkout_sessions"],
            truth["purchase_sessions"],
        ), day
    (lifetime_total,) = connection.execute(
        f"select sum(lifetime_revenue) * 100 from {marts}.customer_lifetime_value"
    ).fetchone()
    (product_total,) = connection.execute(f"select sum(revenue) * 100 from {marts}.product_performance").fetchone()
    net_total = sum(world.ground_truth(day)["net_revenue_cents"] for day in days)
    assert lifetime_total == product_total == net_total
