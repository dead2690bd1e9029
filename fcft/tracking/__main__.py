"""Record run directories in MLflow after the fact: runs whose store stopped answering before they ended, or any
run directory whose MLflow run is missing or incomplete (fcft/tracking/collected.py).

    python -m fcft.tracking record RUN_DIR [RUN_DIR ...] [--uri URI]

Each run's MLflow run is completed from its files (or created, when it has none) and ended: FINISHED with
metrics.json, FAILED (or KILLED) with error.json. A run already ended is left as it is: recording twice does
nothing new. --uri names the store when it is served at another address now (the same backend store, which
holds the run ids the run directories name). Exit status 0 when every directory is recorded, 1 when a store
can't be reached, 2 for a directory that is no ended run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcft.tracking", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="complete or create run directories' MLflow runs")
    record.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a run directory (spec.yaml)")
    record.add_argument("--uri", help="the store to record in, when it is served at another address now")
    args = parser.parse_args(argv)

    from fcft.tracking import TrackingError
    from fcft.tracking.collected import record as record_run

    status = 0
    for run_dir in args.run_dirs:
        try:
            print(f"fcft: {record_run(run_dir, args.uri)}", flush=True)
        except TrackingError as err:
            print(f"fcft: {run_dir}: {err}", file=sys.stderr)
            status = max(status, 1)
        except ValueError as err:
            print(f"fcft: {err}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
