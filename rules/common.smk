"""The workflow's configuration: the config read, typed and checked (llm4brain.design), the design tables
(subjects, segments, each replicate's held-out subjects), the paths of a replicate's tree (llm4brain.layout)
and each stage's section as params. Ablations: rules/ablations.smk; input functions: rules/inputs.smk.

Imports no torch/transformers: every job (and every SLURM job) re-parses this file.
"""

from pathlib import Path

from llm4brain import layout
from llm4brain.align.terms import ABLATIONS, INSTRUCT_ABLATIONS, ablated_align
from llm4brain.code_hash import script_code_hashes
from llm4brain.config_overrides import typed
from llm4brain.config_schema import read_schema, validate_config
from llm4brain.design import Design, check_config
from llm4brain.evaluate.keys import SEMANTIC_KEYS, decoding_keys
from llm4brain.evaluate.packaged_models import PACKAGED, packaged_name
from llm4brain.fmri.bids import bids_bolds, is_cifti, select_bolds
from llm4brain.fmri.wen2018 import wen_bolds
from llm4brain.sections import VideoConfig
from llm4brain.video.sampling import frames_per_tr

# `--config` values arrive as text (Snakemake's YAML base loader): read as the schema types each key
SCHEMA = read_schema(Path(workflow.basedir) / "config" / "schema.yaml")
config.update(typed(dict(config), SCHEMA))
validate_config(
    config,
    SCHEMA,
    source=" + ".join(map(str, workflow.config_settings.configfiles)) or "config",
)

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
