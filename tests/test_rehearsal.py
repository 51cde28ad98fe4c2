"""The full-size rehearsal (benchmarks/rehearsal.py) kept working: at a tenth of Wen 2018's size it runs every
rule of the DAG but the two it stands in for, through Snakemake, reports each one and deletes its data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RULES = {
    "preprocess_fmri",
    "pretrain_scmbm",
    "reference_captions",
    "train_video_llm",
    "pretrain_adaptor",
    "ablate_adaptor",
    "ablation_table",
    "instruct_llm",
    "ablate_instruct",
    "decode_captions",
    "nearest_train_pool",
    "decode_ablation",
    "score_captions",
    "summarize_replicates",
    "plot_results",
    "plot_gallery",
    "plot_fmri_qc",
}


def test_the_rehearsal_runs_every_rule_at_a_tenth_of_wen_size(tmp_path):
    out = tmp_path / "rules.tsv"
    run = subprocess.run(
        [sys.executable, "benchmarks/rehearsal.py", "--scale", "0.1", "--tmp", str(tmp_path), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    table = pd.read_csv(out, sep="\t", index_col="rule")
    assert set(table.index) == RULES
    assert (table["peak_rss_mb"] > 0).all() and (table["jobs"] >= 1).all()
    assert table.loc["preprocess_fmri", "jobs"] == 3 and table.loc["decode_captions", "jobs"] == 3
    assert "whole DAG:" in run.stdout and "goal 6 GB" in run.stdout
    assert not list(tmp_path.glob("rehearsal-*"))  # its tens of GB at full size are deleted
