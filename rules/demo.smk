if DATA["layout"] == "demo":

    rule simulate_demo:
        """Render the demo clips and simulate the subjects' fMRI, in real formats (mp4, NIfTI, BIDS TSV)."""
        output:
            stimuli=expand(
                str(STIMULI / "{segment}.mp4"),
                segment=ALL_SEGMENTS,
                allow_missing=True,
            ),
            captions=str(CAPTIONS_TSV),
            scenes=str(SCENES_TSV),
            levels=str(SCENES_TSV.with_suffix(".json")),
            mask=str(MASK),
            scans=expand(
                str(RAW / "{subject}" / "{subject}_scans.tsv"),
                subject=SUBJECTS,
                allow_missing=True,
            ),
        log:
            f"{LOGS}/simulate_demo.log",
        benchmark:
            f"{BENCHMARKS}/simulate_demo.tsv"
        conda:
            "../envs/llm4brain.yaml"
        params:
            subjects=SUBJECTS,
            segments=_canonical({**DATA["segments"], "subject_train": SUBJECT_TRAIN}),
            tr=DATA["tr"],
            demo=section("demo"),
            seed=replicate_seed,
            code=CODE["simulate_demo"],
        script:
            "../workflow/scripts/simulate_demo.py"
