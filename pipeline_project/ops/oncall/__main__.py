import sys

from pipeline_project.ops.oncall.cli import main

sys.exit(main())
