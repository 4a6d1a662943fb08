"""The docs of the alert channels, generated from their registry (`pipeline_project/alerting/channels/`): the
channel table of `docs/operations.md` and `.env.example`'s channel settings, each between BEGIN and END marker
lines.

`make docs` (`python -m pipeline_project.dev.channel_docs`) rewrites both blocks; `--check` changes
nothing and exits 1 naming the missing and stale lines. `tests/test_alert_channel_registry.py` runs that
check, so a channel added, removed or changed in its module fails the tests until the docs are regenerated.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline_project.alerting.channels import ChannelSpec, Setting, registered_channels

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "pipeline_project/alerting/channels/"


def channel_table(specs: tuple[ChannelSpec, ...]) -> list[str]:
    rows = ["| Channel | Settings (required ones in bold) | What it sends |", "|---|---|---|"]
    for spec in specs:
        settings = ", ".join(_table_setting(setting) for setting in spec.settings)
        if spec.always_on:
            settings = f"{settings}; always on" if settings else "none: always on"
        rows.append(f"| {spec.name} | {settings} | {spec.sends} |")
    return rows


def _table_setting(setting: Setting) -> str:
    name = f"**`{setting.env}`**" if setting.required else f"`{setting.env}`"
    return f"{name} (secret)" if setting.secret else name


def env_example_block(specs: tuple[ChannelSpec, ...]) -> list[str]:
    lines = [
        "# Each channel is off while its required settings are empty; the log channel is always on. A secret is",
        "# only ever read through dg.EnvVar, and never logged.",
    ]
    for spec in specs:
        always = " (always on)" if spec.always_on else ""
        lines.append(f"# {spec.name} channel{always}: {spec.sends}")
        for setting in spec.settings:
            notes = [setting.meaning]
            if setting.required:
                notes.append("required")
            if setting.default:
                notes.append(f"empty = {setting.default}")
            if setting.secret:
                notes.append("a secret")
            lines += [f"# {'; '.join(notes)}", f"{setting.env}="]
    return lines


@dataclass(frozen=True)
class GeneratedBlock:
    path: Path
    begin: str
    end: str
    render: Callable[[tuple[ChannelSpec, ...]], list[str]]

    def current(self) -> list[str]:
        lines = self.path.read_text().splitlines()
        first, last = self._bounds(lines)
        return lines[first + 1 : last]

    def write(self, specs: tuple[ChannelSpec, ...]) -> None:
        lines = self.path.read_text().splitlines()
        first, last = self._bounds(lines)
        self.path.write_text("\n".join([*lines[: first + 1], *self.render(specs), *lines[last:]]) + "\n")

    def differences(self, specs: tuple[ChannelSpec, ...]) -> list[str]:
        """What is missing from the file and what it has that the registry does not, line by line."""
        expected, current = self.render(specs), self.current()
        missing = [f"missing: {line}" for line in expected if line not in current]
        stale = [f"stale: {line}" for line in current if line not in expected]
        if not missing and not stale and expected != current:
            return ["the lines are right but out of order"]
        return missing + stale

    def _bounds(self, lines: list[str]) -> tuple[int, int]:
        try:
            return lines.index(self.begin), lines.index(self.end)
        except ValueError:
            raise ValueError(f"{self.path.name} lacks the marker lines {self.begin!r} and {self.end!r}") from None


BLOCKS = (
    GeneratedBlock(
        REPO_ROOT / "docs" / "operations.md",
        f"<!-- BEGIN alert channels: generated from {SOURCE} by `make docs` -->",
        "<!-- END alert channels -->",
        channel_table,
    ),
    GeneratedBlock(
        REPO_ROOT / ".env.example",
        f"# --- BEGIN alert channels: generated from {SOURCE} by `make docs` ---",
        "# --- END alert channels ---",
        env_example_block,
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    specs = registered_channels()
    stale = False
    for block in BLOCKS:
        if not args.check:
            block.write(specs)
            print(f"wrote the alert channels of {block.path.name}")
        elif differences := block.differences(specs):
            stale = True
            print(f"{block.path.name}: the alert channels are stale (make docs):", *differences, sep="\n  ")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
