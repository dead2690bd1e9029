"""python -m fcft.runs SWEEP_OR_RUN_DIR [...]: wait for submitted runs, collect, report (fcft/runs/sweep.py)."""

import sys

from fcft.runs.sweep import main

sys.exit(main())
