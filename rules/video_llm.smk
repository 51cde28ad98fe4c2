if config["video_llm"]["pretrained"]:

    rule import_video_llm:
        """Check the configured InstructBLIP(-Video) checkpoint; results/video_llm names it."""
        input:
            config["video_llm"]["pretrained"],
        output:
            directory("results/video_llm"),
        log:
            "logs/import_video_llm.log",
        conda:
            "../envs/llm4brain.yaml"
        params:
            video_llm=section("video_llm"),
            frames_per_tr=frames_per_tr(
                VideoConfig.from_dict(config["video"]), DATA["tr"]
            ),
            code=CODE["import_video_llm"],
        script:
            "../workflow/scripts/import_video_llm.py"

else:

    rule train_video_llm:
        """Teach the tiny video Q-Former + LLM to caption clips: the demo's stand-in for Video-LLaMA."""
        input:
            features=feature_files(),
            captions=f"{DATA_RUN}/text/captions.h5",
        output:
            directory(f"{RUN}/video_llm"),
        log:
            f"{LOGS}/train_video_llm.log",
        benchmark:
            f"{BENCHMARKS}/train_video_llm.tsv"
        conda:
            "../envs/llm4brain.yaml"
        threads: train_threads("video_llm")
        resources:
            devices=train_devices("video_llm"),
            gpu=train_devices("video_llm"),
        params:
            train_segments=SEGMENTS["train"],
            video_llm=section("video_llm"),
            seed=replicate_seed,
            code=CODE["train_video_llm"],
        script:
            "../workflow/scripts/train_video_llm.py"
