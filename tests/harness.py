"""What the tests share besides fixtures (those are in conftest.py): the demo source's token, its scale and the
days its landing files are written for."""

from datetime import date

TOKEN = "test-token-do-not-log"
# Small but non-trivial: ~200 orders and ~5,000 web events a day.
TEST_SCALE = 0.1
DAYS = [date(2026, 3, 14), date(2026, 3, 15)]
