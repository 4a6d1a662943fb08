"""The marts' ground truth: a day's daily_revenue and web_funnel figures by DATA_SPEC.md's definitions,
computed straight from the generated records so that the pipeline's marts can be checked against them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

BILLABLE_STATUSES = frozenset({"paid", "shipped", "delivered", "refunded"})
FUNNEL_STEPS = {  # web_funnel column -> event type
    "product_view_sessions": "product_view",
    "add_to_cart_sessions": "add_to_cart",
    "checkout_sessions": "checkout_started",
    "purchase_sessions": "purchase",
}


def daily_marts(orders: list[dict[str, Any]], order_items: list[dict[str, Any]], events: list[tuple]) -> dict[str, int]:
    """The mart figures of a day's orders, order items and web-event rows (WEB_EVENT_COLUMNS order), in cents."""
    order_totals: Counter[int] = Counter()
    order_quantities: Counter[int] = Counter()
    for item in order_items:
        quantity = item["quantity"]
        order_totals[item["order_id"]] += quantity * item["unit_price_cents"] - item["discount_cents"]
        order_quantities[item["order_id"]] += quantity
    billable = [o["order_id"] for o in orders if o["order_status"] in BILLABLE_STATUSES]
    gross = sum(order_totals[order_id] for order_id in billable)
    refunded = sum(order_totals[o["order_id"]] for o in orders if o["order_status"] == "refunded")

    sessions_by_type: dict[str, set[str]] = {}
    for _, session_id, _, event_type, _, _, _ in events:
        sessions_by_type.setdefault(event_type, set()).add(session_id)
    return {
        "orders_count": len(orders),
        "billable_orders_count": len(billable),
        "items_sold": sum(order_quantities[order_id] for order_id in billable),
        "gross_revenue_cents": gross,
        "refunded_revenue_cents": refunded,
        "net_revenue_cents": gross - refunded,
        "customers_count": len({o["customer_id"] for o in orders if o["customer_id"] is not None}),
        "sessions": len({row[1] for row in events}),
        **{column: len(sessions_by_type.get(t, ())) for column, t in FUNNEL_STEPS.items()},
        "events": len(events),
    }
