rule pretrain_adaptor:
    """Align fMRI tokens with the teacher's video tokens (contrastive + cross-subject + domain adaptation)."""
    input:
        fmri=fmri_files(),
        features=feature_files(),
        video_llm=video_llm_dir(),
    output:
        model=directory("results/align/model"),
        latents=expand("results/align/{subject}.h5", subject=SUBJECTS),
        metrics=report(
            "results/align/metrics.tsv",
            caption="../report/identification.rst",
            category="Alignment",
        ),
    log:
        "logs/pretrain_adaptor.log",
    benchmark:
        "results/benchmarks/pretrain_adaptor.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        subjects=SUBJECTS,
        align=section("align"),
        seed=config["seed"],
        code=CODE["align"],
    script:
        "../workflow/scripts/pretrain_adaptor.py"
