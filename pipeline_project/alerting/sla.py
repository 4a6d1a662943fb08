"""The SLA of an asset as the definitions stamped it on its spec (`policies.apply_sla_policies`): severity,
route and owners, and what the asset graph says about its neighbours and partitions (an alert's rerun selection
needs them). Assets the definitions do not know get the default route and owners.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from pipeline_project.alerting.alert import Severity
from pipeline_project.catalog.policies import DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS


@dataclass(frozen=True)
class AssetSla:
    group: str | None
    severity: Severity
    route: str
    owners: tuple[str, ...]


class SlaLookup:
    """Severity, route and owners of an asset, as the SLA catalogue stamped them on its spec; and what the
    definitions say about its neighbours and partitions (an alert's rerun selection needs them)."""

    def __init__(self, asset_graph=None):
        self._graph = asset_graph

    def _known(self, key: dg.AssetKey) -> bool:
        return self._graph is not None and self._graph.has(key)

    def ancestors_and_self(self, key: dg.AssetKey) -> set[dg.AssetKey]:
        return set(self._graph.get_ancestor_asset_keys(key, include_self=True)) if self._known(key) else {key}

    def self_and_descendants(self, key: dg.AssetKey) -> set[dg.AssetKey]:
        found, frontier = {key}, {key}
        while frontier and self._known(key):
            frontier = {child for parent in frontier for child in self._graph.get(parent).child_keys} - found
            found |= frontier
        return found

    def last_partition(self, keys: set[dg.AssetKey]) -> str | None:
        """The last partition of the first partitioned asset among `keys` (the day that should be there)."""
        for key in sorted(keys, key=lambda k: k.to_user_string()):
            partitions = self._graph.get(key).partitions_def if self._known(key) else None
            if partitions is not None:
                return partitions.get_last_partition_key()
        return None

    def is_partitioned(self, key: dg.AssetKey) -> bool:
        return self._known(key) and self._graph.get(key).partitions_def is not None

    def __call__(self, key: dg.AssetKey) -> AssetSla:
        if self._graph is None or not self._graph.has(key):
            return AssetSla(None, Severity.ERROR, DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS)
        node = self._graph.get(key)
        return AssetSla(
            group=node.group_name,
            severity=Severity(node.metadata.get("sla/severity", Severity.ERROR.value)),
            route=str(node.metadata.get("sla/alert_route", DEFAULT_ALERT_ROUTE)),
            owners=tuple(node.owners) or DEFAULT_OWNERS,
        )
