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
