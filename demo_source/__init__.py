"""The demo shop: the upstream system the pipelines extract from, kept apart from the pipeline code.

This package owns everything on the *source* side of the ingestion boundary, built to behave like a real
upstream rather than a fixture:

- `world`: `ShopWorld`, a deterministic generator of the shop's customers, products, orders, order items,
  payments and web events (any day regenerates identically in any process, and any record as of any
  instant: orders live on for up to 30 days after their day), with injectable bad records and the ground
  truth the marts must reproduce (DATA_SPEC.md, next to this file, is the binding definition). Its parts:
  `days` (a world's parameters and its days, generated once and cached), `vocabulary` (tables, keys, the
  values columns take, name pools, categories), `randomness` (seeded streams and stateless hashes),
  `timeline` (the epoch, instants as seconds, days), `catalogue` (products), `customers`, `ledger` (a day's
  orders and the life of an order), `web_events`, `records` (the records built from them) and
  `ground_truth` (the marts by DATA_SPEC.md's definitions).
- `server`: `DemoShopServer`, a paginated, token-protected JSON API over a world as of its clock (date
  listings, change feeds, control figures). Its parts: `queries` (what a request asks for, and cursors),
  `listings` (pages and control figures) and `faults`: `Faults`, the knobs that make it fail (500s, 429s,
  latency, outages, and the source's clock itself).
- `checksum`: the key checksum of the control figures, so that any source can compute it.
- `landing`: `write_landing_files`, which drops each day's web events as JSON-lines files, atomically.
- `__main__`: `python -m demo_source serve|land`.

Nothing here imports the pipeline. The pipeline's code should reach the shop only over HTTP and the
landing directory, as it would reach a real one; tests use `ShopWorld` directly for ground truth.
"""

from demo_source.faults import Faults
from demo_source.landing import write_landing_files
from demo_source.server import DemoShopServer
from demo_source.world import ShopWorld

__all__ = ["DemoShopServer", "Faults", "ShopWorld", "write_landing_files"]
