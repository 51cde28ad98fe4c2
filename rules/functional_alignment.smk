# Functional alignment of the held-out subjects (align.functional_alignment): fitted on training-split fMRI
# only, applied to both splits. Nothing asks for these files while the method is none.


rule fit_functional_alignment:
    """Shared response model of every subject's responses to the training clips they all watched (srm), or of
    its voxels' connectivity (connectivity-srm); reads the train split only, never test fMRI.
    """
    input:
        fmri=fmri_files(),
    output:
        f"{RUN}/{layout.SHARED_RESPONSE}",
    log:
        f"{LOGS}/fit_functional_alignment.log",
    benchmark:
        f"{BENCHMARKS}/fit_functional_alignment.tsv"
    conda:
        "../envs/llm4brain.yaml"
    params:
        subjects=SUBJECTS,
        heldout=heldout_params,
        functional_alignment=functional_alignment_params(
            "method", "features", "n_iter", "max_voxels", "target_block"
        ),
        seed=replicate_seed,
        code=CODE["fit_functional_alignment"],
    script:
        "../workflow/scripts/fit_functional_alignment.py"


rule align_heldout_fmri:
    """A held-out subject's fMRI, both splits, carried into the labelled subjects' voxel space by the fitted
    shared response model."""
    input:
        fmri=f"{DATA_RUN}/fmri/{{subject}}.h5",
        srm=f"{RUN}/{layout.SHARED_RESPONSE}",
    output:
        f"{RUN}/{layout.ALIGNED_FMRI}",
    log:
        f"{LOGS}/align_heldout_fmri/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/align_heldout_fmri/{{subject}}.tsv"
    wildcard_constraints:
        subject="|".join(CARRIED),
    conda:
        "../envs/llm4brain.yaml"
    params:
        functional_alignment=functional_alignment_params("reference"),
        code=CODE["align_heldout_fmri"],
    script:
        "../workflow/scripts/align_heldout_fmri.py"
