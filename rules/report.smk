rule plot_results:
    """Scores with CIs and the training curves of every training rule, for `snakemake --report`."""
    input:
        metrics="results/eval/metrics.tsv",
        logs=list(training_logs().values()),
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
    conda:
        "../envs/llm4brain.yaml"
    params:
        names=list(training_logs().keys()),
        code=CODE["plot_results"],
    script:
        "../workflow/scripts/plot_results.py"


if SCORE_ATTRIBUTES:

    rule plot_attributes:
        """Per subject, the accuracy of each scene attribute in each source's captions, with chance."""
        input:
            "results/eval/attributes.tsv",
        output:
            report(
                "results/report/attributes.png",
                caption="../report/attributes_plot.rst",
                category="Evaluation",
            ),
        log:
            "logs/plot_attributes.log",
        benchmark:
            "results/benchmarks/plot_attributes.tsv"
        conda:
            "../envs/llm4brain.yaml"
        params:
            code=CODE["plot_attributes"],
        script:
            "../workflow/scripts/plot_attributes.py"


rule plot_gallery:
    """Test clips of one subject with reference, fMRI-decoded and teacher captions."""
    input:
        eval="results/eval/{subject}.h5",
        stimuli=expand(str(STIMULI / "{segment}.mp4"), segment=SEGMENTS["test"]),
    output:
        report(
            "results/report/gallery/{subject}.png",
            caption="../report/gallery.rst",
            category="Gallery",
            subcategory="{subject}",
        ),
    log:
        "logs/plot_gallery/{subject}.log",
    benchmark:
        "results/benchmarks/plot_gallery/{subject}.tsv"
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
            "results/report/fmri_qc.png",
            caption="../report/fmri_qc.rst",
            category="fMRI QC",
        ),
    log:
        "logs/plot_fmri_qc.log",
    benchmark:
        "results/benchmarks/plot_fmri_qc.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        code=CODE["plot_fmri_qc"],
    script:
        "../workflow/scripts/plot_fmri_qc.py"
