"""The sweep report from finished run directories built by hand (no training): its metric columns, results.csv
and best run follow fcft.eval.metrics' METRICS and HEADLINE, so a new metric needs no edit in fcft/report/."""

from __future__ import annotations

import csv
import json

from omegaconf import OmegaConf

from fcft.eval import metrics
from fcft.eval.metrics import EvalMetric
from fcft.report import report
from fcft.runs import outcomes

# (method.beta, acc_norm, macro_f1_x, tool_hallucination_rate) per job: each metric has a different best job.
JOBS = [("0.1", 0.50, 0.30, 0.20), ("0.5", 0.70, 0.10, 0.40), ("0.9", 0.60, 0.90, 0.10)]


def finished_sweep(root):
    """A sweep directory of three finished DPO runs and one that failed validation, as a multirun leaves them."""
    sweep_dir = root / "beta"
    for job, (beta, acc_norm, f1_x, halluc) in enumerate(JOBS):
        run_dir = sweep_dir / str(job)
        overrides = ["method=dpo", f"method.beta={beta}"]
        write_hydra(run_dir, overrides)
        save_yaml(run_dir / "spec.yaml", {"model": {"name": "tiny"}, "method": {"beta": float(beta)}})
        ev = {
            "acc": acc_norm - 0.05,
            "acc_norm": acc_norm,
            "acc_norm_ci95": [acc_norm - 0.02, acc_norm + 0.02],
            "macro_f1": 0.25,
            "macro_f1_ci95": [0.2, 0.3],
            "tool_hallucination_rate": halluc,
            "n": 8,
            "macro_f1_x": f1_x,
        }
        record = {"train": {"loss": 1.5, "steps": 3}, "eval": ev, "tracking": {"run_id": f"run{job}"}}
        (run_dir / "metrics.json").write_text(json.dumps(record))
    failed = sweep_dir / "3"
    write_hydra(failed, ["method=dpo", "method.beta=-1"])
    (failed / "error.json").write_text(json.dumps({"type": "SpecError", "message": "method.beta: dpo needs beta > 0"}))
    return sweep_dir


def write_hydra(run_dir, overrides):
    """Hydra's record of the job: its overrides and the composed config."""
    (run_dir / ".hydra").mkdir(parents=True)
    save_yaml(run_dir / ".hydra" / "overrides.yaml", overrides)
    save_yaml(run_dir / ".hydra" / "config.yaml", {"model": {"name": "tiny"}, "experiment": None})


def save_yaml(path, data):
    OmegaConf.save(OmegaConf.create(data), path)


def build(sweep_dir, target):
    results = [outcomes.read(d) for d in outcomes.run_dirs(sweep_dir)]
    with open(target.parent / "stdout.txt", "w") as out:
        report.write(sweep_dir, results, target, out=out)
    return (target / "report.md").read_text(), list(csv.DictReader((target / "results.csv").open()))


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


def table(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_a_metric_added_to_the_eval_list_is_reported_and_the_best_run_follows_the_headline(monkeypatch, tmp_path):
    sweep_dir = finished_sweep(tmp_path)
    markdown, rows = build(sweep_dir, tmp_path / "before")
    header = table(section(markdown, "Runs"))[0]
    assert header[:3] == ["job", "method.beta", "status"] and "macro_f1_x" not in header
    assert "macro_f1_x" not in rows[0]
    assert section(markdown, "Best run").startswith("**1** (method.beta=0.5): acc_norm 0.7000 [0.6800, 0.7200]")
    assert (tmp_path / "before" / "acc_norm_vs_method.beta.png").is_file()

    added = EvalMetric("macro_f1_x", True)
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, added))
    monkeypatch.setattr(metrics, "HEADLINE", added)
    markdown, rows = build(sweep_dir, tmp_path / "after")
    runs = table(section(markdown, "Runs"))
    column = runs[0].index("macro_f1_x")
    assert [row[column] for row in runs[1:]] == ["0.3000", "0.1000", "0.9000", ""]
    assert [row["macro_f1_x"] for row in rows] == ["0.3", "0.1", "0.9", ""]
    assert list(rows[0])[5:16] == [
        "acc_norm",
        "acc_norm_ci95_low",
        "acc_norm_ci95_high",
        "macro_f1",
        "macro_f1_ci95_low",
        "macro_f1_ci95_high",
        "tool_hallucination_rate",
        "acc",
        "n",
        "macro_f1_x",
        "train_loss",
    ]
    assert section(markdown, "Best run").startswith("**2** (method.beta=0.9): macro_f1_x 0.9000,")
    plot = "macro_f1_x_vs_method.beta.png"
    assert f"]({plot})" in markdown and (tmp_path / "after" / plot).is_file()
    assert report.main([str(sweep_dir), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.csv").read_text() == (tmp_path / "after" / "results.csv").read_text()


def test_a_headline_where_lower_is_better_picks_the_lowest_run(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "HEADLINE", EvalMetric("tool_hallucination_rate", False))
    markdown, rows = build(finished_sweep(tmp_path), tmp_path / "report")
    assert section(markdown, "Best run").startswith("**2** (method.beta=0.9): tool_hallucination_rate 0.1000,")
    assert [row["status"] for row in rows] == ["finished", "finished", "finished", "failed"]
    assert rows[3]["reason"] == "SpecError: method.beta: dpo needs beta > 0" and rows[0]["mlflow_run_id"] == "run0"


def test_generated_answers_get_their_own_columns_when_runs_have_them(tmp_path):
    sweep_dir = finished_sweep(tmp_path)
    record = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    record["generate"] = {
        "n": 8,
        "call_decision_accuracy": 0.75,
        "call_decision_accuracy_ci95": [0.5, 1.0],
        "exact_arguments_accuracy": 0.5,
        "exact_arguments_accuracy_ci95": [0.0, 1.0],
        "judge": {"judge_accuracy": 0.625, "judge_accuracy_ci95": [0.25, 0.875]},
    }
    (sweep_dir / "1" / "metrics.json").write_text(json.dumps(record))
    markdown, rows = build(sweep_dir, tmp_path / "report")
    runs = table(section(markdown, "Runs"))
    column = runs[0].index("generated call_decision_accuracy [95% CI]")
    assert [row[column] for row in runs[1:]] == ["", "0.7500 [0.5000, 1.0000]", "", ""]
    judged = runs[0].index("generated judge_accuracy [95% CI]")
    assert runs[2][judged] == "0.6250 [0.2500, 0.8750]"
    assert [row["generate_exact_arguments_accuracy"] for row in rows] == ["", "0.5", "", ""]
    assert rows[1]["generate_judge_accuracy_ci95_low"] == "0.25"
    unmarked, _ = build(finished_sweep(tmp_path / "plain"), tmp_path / "plain_report")
    assert "generated" not in section(unmarked, "Runs")
