"""A day's web events: one session per order ending in its purchase, anonymous browsing up to the day's
volume, as rows in WEB_EVENT_COLUMNS order sorted by event_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from demo_source.randomness import _endless_choices, _profile_second
from demo_source.records import _lines
from demo_source.timeline import LAST_SECOND, _day_seconds
from demo_source.vocabulary import CATEGORIES, PRODUCT_COUNT

if TYPE_CHECKING:
    from demo_source.days import _ShopDays

# Web-event steps as shared (event_type, product_id, page_path) tuples, indexed by product_id where needed,
# so a day's half million events allocate no per-step objects.
_LANDING_PAGES = ("/", "/", "/", "/search", "/deals", "/new-arrivals") + tuple(
    f"/category/{name}" for name, _, _ in CATEGORIES
)
_PAGE_STEPS = tuple(("page_view", None, path) for path in _LANDING_PAGES)
_VIEW_STEPS = tuple(("product_view", pid, f"/products/{pid}") for pid in range(PRODUCT_COUNT + 1))
_CART_STEPS = tuple(("add_to_cart", pid, f"/products/{pid}") for pid in range(PRODUCT_COUNT + 1))
_CHECKOUT_STEP = ("checkout_started", None, "/checkout")
_PURCHASE_STEP = ("purchase", None, "/checkout/complete")
# Session sort keys pack (start second < 2^17, generation index < 2^22) exactly into a double's 53 bits,
# and float keys take CPython's fastest sort path. Even scale 100 stays under 1.5M sessions a day.
_START_KEY = float(1 << 22)
_START_INDEX_MASK = (1 << 22) - 1


@dataclass(slots=True)
class _WebDay:
    rows: list[tuple] = field(default_factory=list)  # WEB_EVENT_COLUMNS order, sorted by event_id
    bad: dict[str, str] = field(default_factory=dict)


def _build_web_day(world: _ShopDays, day: date) -> _WebDay:
    ledger = world._ledger(day)
    catalog = world._catalog(day)
    seconds = _day_seconds(day)
    rng = world._rng("web_events", day)
    rand = rng.random
    gap = rng.getrandbits  # 5 + gap(7): 5..132 seconds between a session's steps
    next_product = _endless_choices(rng, catalog.active_ids, catalog.active_cum_weights).__next__
    n_pages = len(_PAGE_STEPS)

    # A session is a list of shared steps plus their seconds. Sessions are numbered by start time and
    # events by session, then step: ids roughly follow the clock while a session's events stay
    # together, which is far cheaper to assemble than a global per-event sort.
    session_steps: list[list[tuple]] = []
    session_seconds: list[list[int]] = []
    session_customers: list[int | None] = []
    start_keys: list[float] = []
    n_events = 0

    for k, (purchase_second, customer_id) in enumerate(zip(ledger.ordered, ledger.customer_ids, strict=True)):
        order_pids = [line[0] for line in _lines(world, ledger, k)]
        steps = [_PAGE_STEPS[int(rand() * n_pages)]]
        if rand() < 0.3:  # a look at something they did not buy
            steps.append(_VIEW_STEPS[next_product()])
        steps += [_VIEW_STEPS[pid] for pid in order_pids]
        steps += [_CART_STEPS[pid] for pid in order_pids]
        steps += (_CHECKOUT_STEP, _PURCHASE_STEP)
        # The purchase happens at the order's ordered_at; earlier steps count back from it and pile up
        # at midnight rather than spill into the previous day.
        second = purchase_second
        times = [second]
        for _ in range(len(steps) - 1):
            second -= 5 + gap(7)
            times.append(second if second > 0 else 0)
        times.reverse()
        start_keys.append(times[0] * _START_KEY + len(session_steps))
        session_steps.append(steps)
        session_seconds.append(times)
        session_customers.append(customer_id)
        n_events += len(steps)

    while n_events < world.web_events_per_day:
        steps = [_PAGE_STEPS[int(rand() * n_pages)]]
        if rand() < 0.35:
            steps.append(_PAGE_STEPS[int(rand() * n_pages)])
        depth = rand()  # 40% leave after browsing pages, 35% after viewing products, 15% after the cart
        if depth >= 0.4:
            steps.append(_VIEW_STEPS[next_product()])
            if rand() < 0.4:
                steps.append(_VIEW_STEPS[next_product()])
            if depth >= 0.75:
                steps.append(_CART_STEPS[steps[-1][1]])
                if depth >= 0.9:
                    steps.append(_CHECKOUT_STEP)
        second = _profile_second(rand)
        times = [second]
        for _ in range(len(steps) - 1):
            second += 5 + gap(7)
            times.append(second if second < LAST_SECOND else LAST_SECOND)
        start_keys.append(times[0] * _START_KEY + len(session_steps))
        session_steps.append(steps)
        session_seconds.append(times)
        session_customers.append(None)  # browsing without logging in
        n_events += len(steps)

    start_keys.sort()
    event_prefix = day.strftime("e-%Y%m%d-")
    session_prefix = day.strftime("s-%Y%m%d-")
    # Zero-padded numbers make the string ids sort like the numbers they carry.
    rows = []
    add = rows.append
    n = 0
    for session_number, key in enumerate(start_keys, 1):
        index = int(key) & _START_INDEX_MASK
        session_id = session_prefix + str(session_number).zfill(8)
        customer_id = session_customers[index]
        for (event_type, pid, path), second in zip(session_steps[index], session_seconds[index], strict=True):
            n += 1
            add(
                (
                    event_prefix + str(n).zfill(8),
                    session_id,
                    customer_id,
                    event_type,
                    pid,
                    path,
                    seconds[second],
                )
            )

    bad = {}
    for index in world._corrupted_indices("web_events", day, len(rows)):
        event_id, session_id, customer_id, _, pid, path, occurred_at = rows[index]
        rows[index] = (event_id, session_id, customer_id, "bogus", pid, path, occurred_at)
        bad[event_id] = "event_type"
    return _WebDay(rows, bad)
