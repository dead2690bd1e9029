"""benchmarks/gpu.py: refused without CUDA, naming what to do; its --cpu-smoke mode runs every code path (SFT padded,
grouped and padding-free, DPO, MCQ with both backends) on tiny shapes and writes its result files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refused_without_cuda(tmp_path):
    result = _run("--out", str(tmp_path))
    assert result.returncode != 0
    assert "needs a CUDA GPU" in result.stderr and "--cpu-smoke" in result.stderr
    assert not list(tmp_path.iterdir())


def test_cpu_smoke_runs_every_code_path(tmp_path):
    result = _run("--cpu-smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-cpu-smoke.json").read_text())
    assert (tmp_path / "gpu-cpu-smoke.md").read_text().startswith("# benchmarks/gpu.py on cpu-smoke")
    rows = {(r["what"], r.get("batching")): r for r in report["results"]}
    expected = {("sft", "padded"), ("sft", "grouped"), ("sft", "padding_free"), ("dpo", "grouped"), ("mcq fcft", None)}
    assert expected <= set(rows)
    assert ("mcq lm_eval", None) in rows or any("lm-evaluation-harness" in n for n in report["meta"]["notes"])
    assert rows[("sft", "padding_free")]["padding"] == 0
    assert 0 < rows[("sft", "grouped")]["padding"] < rows[("sft", "padded")]["padding"]
    for row in report["results"]:
        assert row.get("step_s", row.get("seconds")) > 0
