if DATA["layout"] == "demo":

    rule simulate_demo:
        """Render the demo clips and simulate the subjects' fMRI, in real formats (mp4, NIfTI, BIDS TSV)."""
        output:
            stimuli=expand(str(STIMULI / "{segment}.mp4"), segment=ALL_SEGMENTS),
            captions=CAPTIONS_TSV,
            scenes=SCENES_TSV,
            levels=SCENES_TSV.with_suffix(".json"),
            mask=MASK,
            scans=expand(
                str(ROOT / "{subject}" / "{subject}_scans.tsv"), subject=SUBJECTS
            ),
        log:
            "logs/simulate_demo.log",
        benchmark:
            "results/benchmarks/simulate_demo.tsv"
        conda:
            "../envs/llm4brain.yaml"
        params:
            subjects=SUBJECTS,
            segments=SEGMENTS,
            tr=DATA["tr"],
            demo=section("demo"),
            seed=config["seed"],
            code=CODE["simulate_demo"],
        script:
            "../workflow/scripts/simulate_demo.py"
