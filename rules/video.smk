rule vision_input:
    """Resolve the vision model's input preprocessing once (size, crop, interpolation, mean/std) so the
    per-segment extraction jobs need not import timm."""
    input:
        VISION_WEIGHTS,
    output:
        "results/features/vision_input.json",
    log:
        "logs/vision_input.log",
    benchmark:
        "results/benchmarks/vision_input.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        video=section("video"),
        code=CODE["vision_input"],
    script:
        "../workflow/scripts/vision_input.py"


rule extract_frames:
    """Decode frames_per_tr frames inside each TR window of one stimulus segment, frame-exact."""
    input:
        video=stimulus,
        config="results/features/vision_input.json",
    output:
        temp(f"{DATA_RUN}/frames/{{segment}}.h5"),
    log:
        f"{DATA_LOGS}/extract_frames/{{segment}}.log",
    benchmark:
        f"{DATA_BENCHMARKS}/extract_frames/{{segment}}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: config["video"]["extract_threads"]
    params:
        tr=DATA["tr"],
        video=section("video"),
        code=CODE["extract_frames"],
    script:
        "../workflow/scripts/extract_frames.py"


rule cache_features:
    """Run the frozen vision model over a segment's frames and cache its tokens (float16)."""
    input:
        f"{DATA_RUN}/frames/{{segment}}.h5",
        VISION_WEIGHTS,
    output:
        f"{DATA_RUN}/features/{{segment}}.h5",
    log:
        f"{DATA_LOGS}/cache_features/{{segment}}.log",
    benchmark:
        f"{DATA_BENCHMARKS}/cache_features/{{segment}}.tsv"
    conda:
        "../envs/llm4brain.yaml"
    threads: 1 + config["video"]["workers"]
    params:
        video=section("video"),
        seed=data_seed,
        code=CODE["cache_features"],
    script:
        "../workflow/scripts/cache_features.py"


if config["captions"]["source"] == "file":

    rule reference_captions:
        """Collect one reference caption per (segment, tr) into the text artifact."""
        input:
            str(CAPTIONS_TSV),
        output:
            f"{DATA_RUN}/text/captions.h5",
        log:
            f"{DATA_LOGS}/reference_captions.log",
        benchmark:
            f"{DATA_BENCHMARKS}/reference_captions.tsv"
        localrule: True
        conda:
            "../envs/llm4brain.yaml"
        params:
            segments=ALL_SEGMENTS,
            captions=section("captions"),
            code=CODE["reference_captions"],
        script:
            "../workflow/scripts/reference_captions.py"

else:

    rule teacher_captions:
        """The pretrained teacher captions every clip: the references of a dataset that ships none."""
        input:
            features=feature_files(),
            video_llm=video_llm_dir(),
        output:
            f"{DATA_RUN}/text/captions.h5",
        log:
            f"{DATA_LOGS}/teacher_captions.log",
        benchmark:
            f"{DATA_BENCHMARKS}/teacher_captions.tsv"
        conda:
            "../envs/llm4brain.yaml"
        params:
            segments=ALL_SEGMENTS,
            captions=section("captions"),
            code=CODE["teacher_captions"],
        script:
            "../workflow/scripts/teacher_captions.py"
