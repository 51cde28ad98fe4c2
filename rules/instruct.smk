rule instruct_llm:
    """Tune projection + LLM on fMRI tokens: caption loss + distillation toward the video teacher."""
    input:
        fmri=adaptor_fmri,
        latents=[f"{RUN}/align/{subject}.h5" for subject in SUBJECTS],
        align=f"{RUN}/{layout.ALIGNER}",
        features=feature_files(),
        captions=f"{DATA_RUN}/text/captions.h5",
        video_llm=video_llm_dir(),
    output:
        model=directory(f"{RUN}/{layout.STUDENT}"),
        log_tsv=f"{RUN}/instruct/train_log.tsv",
    log:
        f"{LOGS}/instruct_llm.log",
    benchmark:
        f"{BENCHMARKS}/instruct_llm.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: train_threads("instruct")
    resources:
        devices=train_devices("instruct"),
        gpu=train_devices("instruct"),
    params:
        subjects=SUBJECTS,
        heldout=heldout_params,
        instruct=section("instruct"),
        seed=replicate_seed,
        code=CODE["instruct_llm"],
    script:
        "../workflow/scripts/instruct_llm.py"


# instruct_llm for an ablation: on an align ablation's aligner (to decode held-out subjects without that term),
# or on the full aligner with an instruct term off (instruct.ablations)
use rule instruct_llm as ablate_instruct with:
    input:
        fmri=adaptor_fmri,
        latents=ablation_latents,
        align=ablation_aligner_model,
        features=feature_files(),
        captions=f"{DATA_RUN}/text/captions.h5",
        video_llm=video_llm_dir(),
    output:
        model=directory(f"{RUN}/instruct/ablations/{{ablation}}/model"),
        log_tsv=f"{RUN}/instruct/ablations/{{ablation}}/train_log.tsv",
    log:
        f"{LOGS}/ablate_instruct/{{ablation}}.log",
    benchmark:
        f"{BENCHMARKS}/ablate_instruct/{{ablation}}.tsv"
    wildcard_constraints:
        ablation="|".join([*ABLATIONS, *INSTRUCT_ABLATIONS]),
    params:
        instruct=ablated_instruct,
