"""python -m fcft.report MULTIRUN_DIR [--out DIR]: rebuild a sweep's report (fcft/report/report.py)."""

import sys

from fcft.report.report import main

sys.exit(main())
