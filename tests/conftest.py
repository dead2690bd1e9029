"""Shared fixtures. Tests run offline (no hub) on fcft's tiny model and bundled sample data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MAX_WORKERS = 4  # each worker holds torch, transformers and TRL (1-2 GB) and starts CLI subprocesses of its own
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Share the cores between the workers (and the subprocesses they start) instead of every torch process
    # spinning a thread per core: on 2 cores, 2 workers x 2 threads is slower than 2 x 1.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, CORES // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
REAL_TEST_ROWS = ROOT.parent / "shared" / "data" / "when2call" / "test_sample.jsonl"


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject.toml's default): one worker per core, at most MAX_WORKERS."""
    return max(1, min(CORES, MAX_WORKERS))


@pytest.fixture(scope="session", autouse=True)
def fcft_cache(tmp_path_factory):
    """One tiny-model cache for the whole session, inherited by CLI subprocesses."""
    os.environ["FCFT_CACHE"] = str(tmp_path_factory.mktemp("fcft-cache"))
    return Path(os.environ["FCFT_CACHE"])


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """One MLflow SQLite store and one reports folder for the session, inherited by CLI subprocesses: runs
    track as they do by default, and nothing lands in the repository (mlflow.db, mlruns/, multirun_reports/)."""
    root = tmp_path_factory.mktemp("tracking")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["FCFT_REPORTS_DIR"] = str(root / "reports")
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="session")
def tiny_dir(fcft_cache):
    from fcft import tiny

    return tiny.ensure()


@pytest.fixture(scope="session")
def real_test_rows():
    """The 90 real When2Call test rows in ../shared (never copied into the repository)."""
    if not REAL_TEST_ROWS.is_file():
        pytest.fail(f"{REAL_TEST_ROWS} is missing: these tests need the shared When2Call sample")
    return REAL_TEST_ROWS


def compose(*overrides: str):
    """The composed (unvalidated) config, as `python -m fcft OVERRIDES` would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fcft.spec.hydra_schema import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path | None = None, module: str = "fcft") -> subprocess.CompletedProcess:
    """`python -m fcft ARGS` (or another module) in a subprocess; output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=600
    )
