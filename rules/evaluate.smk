rule decode_captions:
    """Captions for every test clip of one subject from fMRI, the video teacher, shuffled fMRI, nearest train."""
    input:
        fmri="results/fmri/{subject}.h5",
        latents="results/align/{subject}.h5",
        pool_fmri=labelled_files("fmri"),
        pool_latents=labelled_files("align"),
        features=feature_files(),
        captions="results/text/captions.h5",
        video_llm=video_llm_dir(),
        student="results/instruct/model",
    output:
        "results/eval/{subject}.h5",
    log:
        "logs/decode_captions/{subject}.log",
    benchmark:
        "results/benchmarks/decode_captions/{subject}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        heldout=HELDOUT,
        evaluate=decoding_params(),
        seed=config["seed"],
        code=CODE["decode_captions"],
    script:
        "../workflow/scripts/decode_captions.py"


rule decode_ablation:
    """A subject's test fMRI decoded by an ablated student (source fmri-{ablation})."""
    input:
        fmri="results/fmri/{subject}.h5",
        latents=lambda w: f"{ablation_aligner(w)}/{w.subject}.h5",
        captions="results/text/captions.h5",
        video_llm=video_llm_dir(),
        student="results/instruct/ablations/{ablation}/model",
    output:
        "results/eval/ablations/{ablation}/{subject}.h5",
    log:
        "logs/decode_ablation/{ablation}/{subject}.log",
    benchmark:
        "results/benchmarks/decode_ablation/{ablation}/{subject}.tsv"
    wildcard_constraints:
        ablation="|".join([*ABLATIONS, *INSTRUCT_ABLATIONS]),
    conda:
        "../envs/llm4brain.yaml"
    params:
        heldout=HELDOUT,
        evaluate=decoding_params(),
        seed=config["seed"],
        code=CODE["decode_ablation"],
    script:
        "../workflow/scripts/decode_ablation.py"


rule score_captions:
    """Score every subject x source against all references with pycocoevalcap."""
    input:
        decoded=expand("results/eval/{subject}.h5", subject=SUBJECTS),
        ablated=ablation_decodes(),
        captions="results/text/captions.h5",
        checkpoints=semantic_checkpoints(),
    output:
        metrics=report(
            "results/eval/metrics.tsv",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        identification=report(
            "results/eval/identification.tsv",
            caption="../report/identification.rst",
            category="Evaluation",
        ),
        tests=report(
            "results/eval/tests.tsv",
            caption="../report/tests.rst",
            category="Evaluation",
        ),
        ablation=report(
            "results/eval/ablation.tsv",
            caption="../report/caption_ablation.rst",
            category="Ablations",
        ),
    log:
        "logs/score_captions.log",
    benchmark:
        "results/benchmarks/score_captions.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: 2
    params:
        heldout=HELDOUT,
        evaluate=section("evaluate"),
        seed=config["seed"],
        code=CODE["score_captions"],
    script:
        "../workflow/scripts/score_captions.py"


if SCORE_ATTRIBUTES:

    rule score_attributes:
        """Accuracy of each scene attribute (count, size, colour, shape, motion, background) the captions name."""
        input:
            decoded=expand("results/eval/{subject}.h5", subject=SUBJECTS),
            ablated=ablation_decodes(),
            scenes=SCENES_TSV,
            levels=SCENES_TSV.with_suffix(".json"),
        output:
            report(
                "results/eval/attributes.tsv",
                caption="../report/attributes.rst",
                category="Evaluation",
            ),
        log:
            "logs/score_attributes.log",
        benchmark:
            "results/benchmarks/score_attributes.tsv"
        conda:
            "../envs/llm4brain.yaml"
        params:
            heldout=HELDOUT,
            code=CODE["score_attributes"],
        script:
            "../workflow/scripts/score_attributes.py"
