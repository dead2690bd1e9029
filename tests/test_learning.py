"""Training improves what it is meant to improve, on the embedded default (tiny model, bundled sample data).

`python -m fcft` trains the tiny model with its own settings (conf/model_method/tiny_sft.yaml) and scores the
starting model and the trained one on the held-out test rows: the trained model's acc_norm interval lies above
the starting model's. DPO from that run raises the preference margin. Trained on the prompts instead of the
answers (a broken completion mask), the same recipe doesn't raise the score: so a broken mask or format fails
here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

from fcft.data import SAMPLE_DIR, make_sample

# The default run with the loss on the prompt's tokens instead of the answer's: fcft's real worker and recipe,
# only the SFT dataset's completion mask inverted. argv[1]: the run directory.
PROMPT_ONLY_RUN = """
import dataclasses, json, sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from fcft import spec, worker
from fcft.spec.hydra_schema import register_schema

sft = worker.get_method("sft")

def prompt_only(*args):
    return sft.dataset(*args).map(lambda row: {"completion_mask": [1 - m for m in row["completion_mask"]]})

worker.get_method = lambda name: dataclasses.replace(sft, dataset=prompt_only)
register_schema()
with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
    cfg = compose(config_name="config", overrides=["tracking=none"])
worker.run(spec.validate(cfg), Path(sys.argv[1]))
"""


def _apart(base: dict, trained: dict) -> bool:
    """The trained model's 95% interval of acc_norm lies wholly above the starting model's."""
    return trained["acc_norm_ci95"][0] > base["acc_norm_ci95"][1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    """`python -m fcft` as a user runs it (nothing overridden but where it writes and its tracking), and the same
    with the prompt-only mask; at the same time, each on a core of its own."""
    root = tmp_path_factory.mktemp("learning")
    commands = {
        "sft": [sys.executable, "-m", "fcft", f"hydra.run.dir={root / 'sft'}", "tracking=none"],
        "prompt_only": [sys.executable, "-c", PROMPT_ONLY_RUN, str(root / "prompt_only")],
    }
    started = {}
    for name, command in commands.items():
        with open(root / f"{name}.out", "w") as out, open(root / f"{name}.err", "w") as err:
            started[name] = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"}
            )
    for name, process in started.items():
        assert process.wait(timeout=600) == 0, (root / f"{name}.err").read_text()[-3000:]
    return {
        name: {
            "dir": root / name,
            "stdout": (root / f"{name}.out").read_text(),
            "metrics": json.loads((root / name / "metrics.json").read_text()),
        }
        for name in commands
    }


def test_sft_raises_the_held_out_score(runs):
    metrics = runs["sft"]["metrics"]
    base, trained = metrics["eval_base"], metrics["eval"]
    assert base["n"] == trained["n"] == 48 and base["format"] == trained["format"]
    assert _apart(base, trained), (base["acc_norm_ci95"], trained["acc_norm_ci95"])


def test_the_default_run_prints_base_and_trained_scores_side_by_side(runs):
    stdout, metrics = runs["sft"]["stdout"], runs["sft"]["metrics"]
    lines = stdout.splitlines()
    header = next(line for line in lines if line.split() == ["eval", "base", "trained"])
    acc_norm = next(line for line in lines if line.split()[:2] == ["eval", "acc_norm"])
    base, trained = f"{metrics['eval_base']['acc_norm']:.4f}", f"{metrics['eval']['acc_norm']:.4f}"
    assert acc_norm.index(base) == header.index("base") and acc_norm.index(trained) == header.index("trained")


def test_a_broken_completion_mask_does_not_raise_the_score(runs):
    """The default recipe with the loss on the prompt tokens instead of the answer's learns no better answers."""
    metrics = runs["prompt_only"]["metrics"]
    assert metrics["train"]["steps"] == runs["sft"]["metrics"]["train"]["steps"]
    assert not _apart(metrics["eval_base"], metrics["eval"]), (metrics["eval_base"], metrics["eval"])


def test_the_test_rows_are_held_out():
    """No test row asks a training row's question with the same tools: the score is on rows not trained on."""
    parts = {
        part: [json.loads(line) for line in (SAMPLE_DIR / f"{part}.jsonl").read_text().splitlines()]
        for part in ("train_sft", "train_pref", "test")
    }
    seen = make_sample.training_keys(parts)
    assert not [row["uuid"] for row in parts["test"] if make_sample.row_key(row["question"], row["tools"]) in seen]


def test_dpo_after_sft_raises_the_preference_margin(runs, tmp_path):
    """A few DPO steps (conf/model_method/tiny_dpo.yaml) from the default run: the chosen answers' margin over the
    rejected ones, TRL's rewards/margins, starts at 0 (the policy is its reference) and grows."""
    run_dir = tmp_path / "dpo"
    result = run_cli(
        "method=dpo",
        f"method.init_from={runs['sft']['dir']}",
        "method.max_steps=6",
        "eval.enabled=false",
        "tracking=none",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    margins = [entry["rewards/margins"] for entry in log if "rewards/margins" in entry]
    assert len(margins) == 6 and margins[0] == pytest.approx(0, abs=1e-6), margins
    assert sum(margins[-3:]) / 3 > 0.1 > sum(margins[:3]) / 3, margins
