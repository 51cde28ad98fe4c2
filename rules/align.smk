if config["scmbm"]["pretrain"] and not config["scmbm"]["checkpoint"]:

    rule pretrain_scmbm:
        """Masked brain modelling of the fMRI encoder on every subject's training fMRI and the unlabelled
        collections (no labels)."""
        input:
            fmri=fmri_files(),
            collections=collection_files(),
            collection_qc=collection_qc_tables(),
        output:
            directory(f"{RUN}/scmbm"),
        log:
            f"{LOGS}/pretrain_scmbm.log",
        benchmark:
            f"{BENCHMARKS}/pretrain_scmbm.tsv"
        conda:
            "../envs/llm4brain.yaml"
        threads: train_threads("scmbm")
        resources:
            devices=train_devices("scmbm"),
            gpu=train_devices("scmbm"),
        params:
            encoder=section("encoder"),
            scmbm=section("scmbm"),
            seed=replicate_seed,
            code=CODE["pretrain_scmbm"],
        script:
            "../workflow/scripts/pretrain_scmbm.py"


rule pretrain_adaptor:
    """Align fMRI tokens with the teacher's video tokens (contrastive + cross-subject + domain adaptation)."""
    input:
        fmri=adaptor_fmri,
        features=feature_files(),
        video_llm=video_llm_dir(),
        pretrained=pretrained_encoder(),
    output:
        model=directory(f"{RUN}/{layout.ALIGNER}"),
        latents=[f"{RUN}/align/{subject}.h5" for subject in SUBJECTS],
        metrics=report(
            f"{RUN}/align/metrics.tsv",
            caption="../report/identification.rst",
            category="Alignment",
            subcategory="r{replicate}",
        ),
    log:
        f"{LOGS}/pretrain_adaptor.log",
    benchmark:
        f"{BENCHMARKS}/pretrain_adaptor.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: train_threads("align")
    resources:
        devices=train_devices("align"),
        gpu=train_devices("align"),
    params:
        subjects=SUBJECTS,
        encoder=section("encoder"),
        align=align_section,
        seed=replicate_seed,
        code=CODE["pretrain_adaptor"],
    script:
        "../workflow/scripts/pretrain_adaptor.py"


# pretrain_adaptor with one loss term switched off (align.ablations), for the ablation table
use rule pretrain_adaptor as ablate_adaptor with:
    output:
        model=directory(f"{RUN}/align/ablations/{{ablation}}/model"),
        latents=[
            f"{RUN}/align/ablations/{{ablation}}/{subject}.h5" for subject in SUBJECTS
        ],
        metrics=f"{RUN}/align/ablations/{{ablation}}/metrics.tsv",
    log:
        f"{LOGS}/ablate_adaptor/{{ablation}}.log",
    benchmark:
        f"{BENCHMARKS}/ablate_adaptor/{{ablation}}.tsv"
    wildcard_constraints:
        ablation="|".join(ABLATIONS),
    params:
        align=ablated_align_params,


rule ablation_table:
    """Latent identification of the full aligner next to each ablation, per subject."""
    input:
        full=f"{RUN}/align/metrics.tsv",
        ablations=[
            f"{RUN}/align/ablations/{ablation}/metrics.tsv"
            for ablation in config["align"]["ablations"]
        ],
    output:
        report(
            f"{RUN}/align/ablation.tsv",
            caption="../report/ablation.rst",
            category="Ablations",
            subcategory="r{replicate}",
        ),
    log:
        f"{LOGS}/ablation_table.log",
    benchmark:
        f"{BENCHMARKS}/ablation_table.tsv"
    localrule: True
    conda:
        "../envs/llm4brain.yaml"
    params:
        ablations=config["align"]["ablations"],
        code=CODE["ablation_table"],
    script:
        "../workflow/scripts/ablation_table.py"
