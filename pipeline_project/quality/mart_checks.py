"""Mart contracts as asset checks: each mart's pandera contract, split by severity.

Per mart, one pass over the table yields two results: `contract_errors` (blocking, ERROR) and
`contract_warnings` (WARN, never blocks). Metadata carries the rows checked, a `fail/<rule>` count per
rule (numeric, so Dagster plots it over time) and a small sample of failing rows, with the values of columns
the contract marks as personal data masked (the sample travels on into alerts).
"""

import dagster as dg
import polars as pl

from pipeline_project.catalog.policies import SLA_CATALOGUE
from pipeline_project.quality.contracts import ERROR, MART_CONTRACTS, MartContract, failure_cases, rule_name
from pipeline_project.resources import WarehouseResource
from pipeline_project.secrets import mask_personal
from pipeline_project.transform.warehouse import mart_table

ERRORS_CHECK = "contract_errors"
WARNINGS_CHECK = "contract_warnings"
SAMPLE_ROWS = 5


def count_failures(contract: MartContract, cases: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Failing row counts per rule, grouped by severity: {"ERROR": {rule: rows}, "WARN": {...}}."""
    counts: dict[str, dict[str, int]] = {"ERROR": {}, "WARN": {}}
    for (column, check), group in cases.group_by(["column", "check"], maintain_order=True):
        rows = group["index"].n_unique() if group["index"].null_count() < group.height else 1
        counts[contract.severity(column, check)][rule_name(column, check)] = rows
    return counts


def _sample(contract: MartContract, cases: pl.DataFrame, severity: str) -> str:
    rows = [row for row in cases.iter_rows(named=True) if contract.severity(row["column"], row["check"]) == severity][
        :SAMPLE_ROWS
    ]
    if not rows:
        return "no failing rows"
    lines = ["| row | rule | value |", "|---|---|---|"]
    lines += [
        f"| {'table' if row['index'] is None else row['index']} | {rule_name(row['column'], row['check'])} "
        f"| {mask_personal(row['failure_case']) if contract.is_personal(row['column']) else row['failure_case']} |"
        for row in rows
    ]
    return "\n".join(lines)


def build_mart_contract_check(contract: MartContract) -> dg.AssetChecksDefinition:
    mart = dg.AssetKey(contract.mart)
    policy = SLA_CATALOGUE["marts"]

    @dg.multi_asset_check(
        name=f"{contract.mart}_contract",
        specs=[
            dg.AssetCheckSpec(
                ERRORS_CHECK,
                asset=mart,
                blocking=True,
                description=f"ERROR rules of the {contract.model.__name__} contract.",
            ),
            dg.AssetCheckSpec(
                WARNINGS_CHECK,
                asset=mart,
                description=f"WARN rules of the {contract.model.__name__} contract (never block).",
            ),
        ],
        retry_policy=policy.retry,
        pool=policy.pool,
    )
    def check_contract(warehouse: WarehouseResource):
        with warehouse.read_only() as connection:
            frame = connection.sql(f"select * from {mart_table(contract.mart)}").pl()
        cases = failure_cases(contract.model, frame)
        counts = count_failures(contract, cases)
        for check_name, severity in ((ERRORS_CHECK, ERROR), (WARNINGS_CHECK, "WARN")):
            failing = counts[severity]
            yield dg.AssetCheckResult(
                asset_key=mart,
                check_name=check_name,
                passed=not failing,
                severity=dg.AssetCheckSeverity.ERROR if severity == ERROR else dg.AssetCheckSeverity.WARN,
                metadata={
                    "rows_checked": frame.height,
                    "failing_rules": len(failing),
                    **{f"fail/{rule}": rows for rule, rows in failing.items()},
                    "sample": dg.MetadataValue.md(_sample(contract, cases, severity)),
                },
            )

    return check_contract


mart_contract_checks = [build_mart_contract_check(contract) for contract in MART_CONTRACTS.values()]
