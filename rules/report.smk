rule plot_results:
    """Every replicate's scores with CIs and the training curves of every training rule, for `snakemake --report`."""
    input:
        metrics=replicate_files(f"{RUN}/eval/metrics.tsv"),
        logs=[path for seed in REPLICATES for path in training_logs(seed).values()],
    output:
        scores=report(
            "results/report/scores.png",
            caption="../report/scores.rst",
            category="Evaluation",
        ),
        training=report(
            "results/report/training.png",
            caption="../report/training.rst",
            category="Training",
        ),
    log:
        "logs/plot_results.log",
    benchmark:
        "results/benchmarks/plot_results.tsv"
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        replicates=REPLICATES,
        names=[name for seed in REPLICATES for name in training_logs(seed)],
        code=CODE["plot_results"],
    script:
        "../workflow/scripts/plot_results.py"


if SCORE_ATTRIBUTES:

    rule plot_attributes:
        """Per subject, the accuracy of each scene attribute in each source's captions, with chance."""
        input:
            f"{RUN}/eval/attributes.tsv",
        output:
            report(
                f"{RUN}/report/attributes.png",
                caption="../report/attributes_plot.rst",
                category="Evaluation",
                subcategory="r{replicate}",
            ),
        log:
            f"{LOGS}/plot_attributes.log",
        benchmark:
            f"{BENCHMARKS}/plot_attributes.tsv"
        localrule: True
        conda:
            "../envs/llm4brain.yaml"
        params:
            code=CODE["plot_attributes"],
        script:
            "../workflow/scripts/plot_attributes.py"


rule plot_gallery:
    """Test clips of one subject with reference, fMRI-decoded and teacher captions."""
    input:
        eval=f"{RUN}/eval/{{subject}}.h5",
        stimuli=expand(
            str(STIMULI / "{segment}.mp4"),
            segment=SEGMENTS["test"],
            allow_missing=True,
        ),
    output:
        report(
            f"{RUN}/report/gallery/{{subject}}.png",
            caption="../report/gallery.rst",
            category="Gallery",
            subcategory="{subject} r{replicate}",
        ),
    log:
        f"{LOGS}/plot_gallery/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/plot_gallery/{{subject}}.tsv"
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        segments=SEGMENTS["test"],
        tr=DATA["tr"],
        code=CODE["plot_gallery"],
    script:
        "../workflow/scripts/plot_gallery.py"


rule plot_fmri_qc:
    """Temporal SNR and repeat reliability of every subject's ROI voxels."""
    input:
        fmri_files(),
    output:
        report(
            f"{DATA_RUN}/report/fmri_qc.png",
            caption="../report/fmri_qc.rst",
            category="fMRI QC",
        ),
    log:
        f"{DATA_LOGS}/plot_fmri_qc.log",
    benchmark:
        f"{DATA_BENCHMARKS}/plot_fmri_qc.tsv"
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        code=CODE["plot_fmri_qc"],
    script:
        "../workflow/scripts/plot_fmri_qc.py"
