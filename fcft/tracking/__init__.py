"""MLflow tracking: one MLflow run per fcft run, a parent run per multirun, and the lineage between runs.

Where (conf/tracking/, spec.tracking):
  tracking=mlflow (default)  tracking.uri null: the embedded store sqlite:///<working directory>/mlflow.db, created
                             on first use, with artifacts in <working directory>/mlruns/; or any tracking URI: an
                             http(s) server, a SageMaker MLflow ARN (the sagemaker-mlflow plugin), another SQLite
                             file (artifacts in mlruns/ beside it), a database
  tracking=none              nothing is recorded (the run directory still has everything)

    store.py      the MLflow client for a URI, the experiment, TrackingError (the URI grammar: fcft/spec/uris.py)
    run.py        one run: params (the spec), tags, train/ and eval/ metrics, the run directory's files
    lineage.py    a run started from another (method.init_from), and an MLflow run id back to its run directory
    collected.py  a run recorded from its directory afterwards: a remote job that could not reach the store, once
                  its outputs are collected, or a run whose store stopped answering before it ended
    sweep.py      a multirun's parent run (<sweep dir>/tracking.json), ended with the best score
    __main__.py   python -m fcft.tracking record RUN_DIR...: collected.py's record, from the command line

Tracking never holds a run hostage: an http(s) store that doesn't answer stops a run in seconds, before it starts;
one that goes away mid-run costs the run seconds (run.py), and the run ends saying how to record it later.

The run's id goes into metrics.json ("tracking"): a run started from this run directory links back to it, and
`method.init_from=<MLflow run id>` finds the directory again through the fcft.run_dir tag.
"""

from fcft.spec.uris import reachable_from_elsewhere, run_id_in, store_uri, uri_problem
from fcft.tracking.collected import record, record_collected
from fcft.tracking.lineage import run_dir_of
from fcft.tracking.run import Tracker, start
from fcft.tracking.store import TrackingError, arn_plugin_problem, run_url, tracking_on
from fcft.tracking.sweep import end_sweep, log_sweep_report, parent_for, start_sweep, sweep_parent

__all__ = [
    "Tracker",
    "TrackingError",
    "arn_plugin_problem",
    "end_sweep",
    "log_sweep_report",
    "parent_for",
    "reachable_from_elsewhere",
    "record",
    "record_collected",
    "run_dir_of",
    "run_id_in",
    "run_url",
    "start",
    "start_sweep",
    "store_uri",
    "sweep_parent",
    "tracking_on",
    "uri_problem",
]
