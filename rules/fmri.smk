rule preprocess_fmri:
    """Mask, detrend, z-score and lag one subject's runs, paired to (segment, tr)."""
    input:
        unpack(fmri_inputs),
    output:
        f"{DATA_RUN}/fmri/{{subject}}.h5",
    log:
        f"{DATA_LOGS}/preprocess_fmri/{{subject}}.log",
    benchmark:
        f"{DATA_BENCHMARKS}/preprocess_fmri/{{subject}}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        subject_dir=subject_dir,
        segments=lambda wildcards: subject_segments(wildcards.subject),
        tr=DATA["tr"],
        layout={key: DATA[key] for key in ("layout", "bids", "wen2018")},
        fmri=section("fmri"),
        code=CODE["preprocess_fmri"],
    script:
        "../workflow/scripts/preprocess_fmri.py"


rule preprocess_collection:
    """Clean one subject of an unlabelled collection like a task subject; every kept volume is a sample."""
    input:
        unpack(collection_inputs),
    output:
        bold=f"{DATA_RUN}/collections/{{collection}}/{{participant}}.h5",
        qc=f"{DATA_RUN}/collections/{{collection}}/qc/{{participant}}.tsv",
    log:
        f"{DATA_LOGS}/preprocess_collection/{{collection}}/{{participant}}.log",
    benchmark:
        f"{DATA_BENCHMARKS}/preprocess_collection/{{collection}}/{{participant}}.tsv"
    wildcard_constraints:
        collection="|".join(COLLECTIONS),
        participant="[A-Za-z0-9][A-Za-z0-9_-]*",
    conda:
        "../envs/llm4brain.yaml"
    params:
        runs=collection_runs,
        tr=collection_tr,
        on_bad_run=collection_on_bad_run,
        fmri=collection_cleaning,
        layout={key: DATA[key] for key in ("layout", "bids", "wen2018")},
        code=CODE["preprocess_collection"],
    script:
        "../workflow/scripts/preprocess_collection.py"


rule collection_qc:
    """Every run of a collection, used or skipped (with the reason and the file)."""
    input:
        collection_subject_qc,
    output:
        report(
            f"{DATA_RUN}/collections/{{collection}}/qc.tsv",
            caption="../report/collection_qc.rst",
            category="fMRI QC",
            subcategory="{collection}",
        ),
    log:
        f"{DATA_LOGS}/collection_qc/{{collection}}.log",
    benchmark:
        f"{DATA_BENCHMARKS}/collection_qc/{{collection}}.tsv"
    wildcard_constraints:
        collection="|".join(COLLECTIONS),
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        code=CODE["collection_qc"],
    script:
        "../workflow/scripts/collection_qc.py"
