rule preprocess_fmri:
    """Mask, detrend, z-score and lag one subject's runs, paired to (segment, tr)."""
    input:
        unpack(fmri_inputs),
    output:
        "results/fmri/{subject}.h5",
    log:
        "logs/preprocess_fmri/{subject}.log",
    benchmark:
        "results/benchmarks/preprocess_fmri/{subject}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        subject_dir=subject_dir,
        segments=SEGMENTS,
        tr=DATA["tr"],
        layout={key: DATA[key] for key in ("layout", "bids", "wen2018")},
        fmri=section("fmri"),
        code=CODE["preprocess_fmri"],
    script:
        "../workflow/scripts/preprocess_fmri.py"
