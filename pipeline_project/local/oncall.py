"""Moved: the on-call CLI is `pipeline_project.ops.oncall` (installed as the `oncall` command by `make install`).
`python -m pipeline_project.local.oncall` keeps working for old notes and scripts."""

import sys

from pipeline_project.ops.oncall.cli import main
from pipeline_project.ops.oncall.common import export_source_settings

__all__ = ["export_source_settings", "main"]

if __name__ == "__main__":
    sys.exit(main())
