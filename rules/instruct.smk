rule instruct_llm:
    """Tune projection + LLM on fMRI tokens: caption loss + distillation toward the video teacher."""
    input:
        fmri=fmri_files(),
        latents=expand("results/align/{subject}.h5", subject=SUBJECTS),
        align="results/align/model",
        features=feature_files(),
        captions="results/text/captions.h5",
        video_llm=video_llm_dir(),
    output:
        model=directory("results/instruct/model"),
        log_tsv="results/instruct/train_log.tsv",
    log:
        "logs/instruct_llm.log",
    benchmark:
        "results/benchmarks/instruct_llm.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: config["instruct"]["train"]["threads"]
    params:
        subjects=SUBJECTS,
        heldout=HELDOUT,
        instruct=section("instruct"),
        seed=config["seed"],
        code=CODE["instruct"],
    script:
        "../workflow/scripts/instruct_llm.py"


rule ablate_instruct:
    """instruct_llm on an align ablation's aligner, so held-out subjects can be decoded without that term."""
    input:
        fmri=fmri_files(),
        latents=expand(
            "results/align/ablations/{{ablation}}/{subject}.h5", subject=SUBJECTS
        ),
        align="results/align/ablations/{ablation}/model",
        features=feature_files(),
        captions="results/text/captions.h5",
        video_llm=video_llm_dir(),
    output:
        model=directory("results/instruct/ablations/{ablation}/model"),
        log_tsv="results/instruct/ablations/{ablation}/train_log.tsv",
    log:
        "logs/ablate_instruct/{ablation}.log",
    benchmark:
        "results/benchmarks/ablate_instruct/{ablation}.tsv"
    wildcard_constraints:
        ablation="|".join(ABLATIONS),
    conda:
        "../envs/llm4brain.yaml"
    threads: config["instruct"]["train"]["threads"]
    params:
        subjects=SUBJECTS,
        heldout=HELDOUT,
        instruct=section("instruct"),
        seed=config["seed"],
        code=CODE["instruct"],
    script:
        "../workflow/scripts/instruct_llm.py"
