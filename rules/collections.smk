"""Unlabelled collections for SC-MBM (scmbm.collections): their subjects and runs, found at DAG build, and
the input and params functions of rules preprocess_collection (one job per subject, so SLURM spreads them)
and collection_qc (rules/fmri.smk). Like common.smk, it holds no rule.

Discovery reads folder listings and participants.tsv only; headers are checked by each subject's job.
"""

from types import SimpleNamespace

from llm4brain.fmri.discover import discover
from llm4brain.sections import ScmbmCollectionsConfig


def task_kind():
    """What the task's samples are, and so which runs a collection contributes: cifti (grayordinates) or volume."""
    if DATA["layout"] == "demo":
        return "volume"
    if DATA["layout"] == "wen2018":
        return "cifti" if DATA["wen2018"]["images"] == "cifti" else "volume"
    runs = subject_runs(SimpleNamespace(subject=SUBJECTS[0]))
    return "cifti" if all(is_cifti(run) for run in runs) else "volume"


def _collections():
    """``name → entry`` (its TR filled in) and ``name → {subject → {run → file}}``, checked."""
    entries = config["scmbm"]["collections"]
    names = [entry["name"] for entry in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"config scmbm.collections: names {twice} are used more than once"
        )
    if entries and not (
        config["scmbm"]["pretrain"] and not config["scmbm"]["checkpoint"]
    ):
        raise ValueError(
            "config scmbm.collections are for pretrain_scmbm: set scmbm.pretrain: true and no scmbm.checkpoint"
        )
    if not entries:
        return {}, {}
    kind = COLLECTION_KIND
    roots = {Path(str(RAW).format(replicate=seed)) for seed in REPLICATES}
    task_dirs = {
        (root / subject).resolve(): subject for root in roots for subject in SUBJECTS
    }
    found = {}
    for entry in entries:
        found[entry["name"]] = runs = discover(
            ScmbmCollectionsConfig.from_dict(entry), kind
        )
        root = Path(entry["root"]).resolve()
        if not any(d.is_relative_to(root) or root.is_relative_to(d) for d in task_dirs):
            continue  # no task subject's folder in or around this collection: no file to check
        for files in runs.values():
            for path in files.values():
                for folder in path.resolve().parents:
                    if folder in task_dirs:
                        raise ValueError(
                            f"config scmbm.collections {entry['name']}: {path} is a run of task subject "
                            f"{task_dirs[folder]} ({folder}); a task subject's runs, its test segments among "
                            f"them, never enter a collection (its training runs are pretrained on already)"
                        )
    return {e["name"]: {**e, "tr": e["tr"] or DATA["tr"]} for e in entries}, found


COLLECTION_KIND = task_kind() if config["scmbm"]["collections"] else None
COLLECTIONS, COLLECTION_RUNS = _collections()


def collection_files(wildcards=None):
    """Every collection subject's samples, for pretrain_scmbm."""
    return [
        f"{DATA_RUN}/collections/{name}/{subject}.h5"
        for name, subjects in COLLECTION_RUNS.items()
        for subject in subjects
    ]


def collection_qc_tables(wildcards=None):
    """Each collection's QC table (its rule fails when no run of the collection is usable)."""
    return [f"{DATA_RUN}/collections/{name}/qc.tsv" for name in COLLECTIONS]


def collection_inputs(wildcards):
    """The subject's runs, and the task's ROI mask when the samples are volumes."""
    runs = list(COLLECTION_RUNS[wildcards.collection][wildcards.participant].values())
    return (
        {"runs": runs}
        if COLLECTION_KIND == "cifti"
        else {"runs": runs, "mask": raw(MASK, wildcards)}
    )


def collection_runs(wildcards):
    """``run name → file`` of one collection subject."""
    runs = COLLECTION_RUNS[wildcards.collection][wildcards.participant]
    return {name: str(path) for name, path in runs.items()}


def collection_tr(wildcards):
    return COLLECTIONS[wildcards.collection]["tr"]


def collection_on_bad_run(wildcards):
    return COLLECTIONS[wildcards.collection]["on_bad_run"]


def collection_cleaning(wildcards):
    """The task's cleaning (fmri section) with the collection's own trim and confounds."""
    fmri, entry = config["fmri"], COLLECTIONS[wildcards.collection]
    keys = ("detrend_order", "high_pass", "zscore", "mask_labels", "cifti_structures")
    return _canonical(
        {
            **{key: fmri[key] for key in keys},
            "trim": {**entry["trim"], "keep": None},
            "confounds": entry["confounds"],
        }
    )


def collection_subject_qc(wildcards):
    run = DATA_RUN.format(replicate=wildcards.replicate) if DEMO else DATA_RUN
    return expand(
        f"{run}/collections/{{collection}}/qc/{{participant}}.tsv",
        collection=wildcards.collection,
        participant=COLLECTION_RUNS[wildcards.collection],
    )
