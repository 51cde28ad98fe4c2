# The ablations' runs and the align sections each aligner is trained with (the loss-term and ablation names
# live in llm4brain.align.terms): which students an ablation trains, which aligner each builds on, and the
# section it reads.


def student_ablations(replicate):
    """The students a replicate trains for an ablation, each with the subjects it decodes: on an ablated
    aligner (the held-out subjects, whom domain adaptation is for) or with an instruct term off (every
    subject)."""
    held = heldout(replicate)
    return {
        **{a: held for a in config["align"]["ablations"] if held},
        **{a: SUBJECTS for a in config["instruct"]["ablations"]},
    }


def ablation_aligner(wildcards):
    """The aligner an ablated student builds on: the ablated one, or the full one for instruct ablations."""
    run = RUN.format(replicate=wildcards.replicate)
    if wildcards.ablation in INSTRUCT_ABLATIONS:
        return f"{run}/align"
    return f"{run}/align/ablations/{wildcards.ablation}"


def ablation_latents(wildcards):
    """Every subject's tokens from the aligner an ablated student builds on."""
    return expand(
        "{align}/{subject}.h5", align=ablation_aligner(wildcards), subject=SUBJECTS
    )


def ablation_aligner_model(wildcards):
    """The model folder of the aligner an ablated student builds on."""
    return f"{ablation_aligner(wildcards)}/model"


def ablated_instruct(wildcards):
    """The instruct section with an instruct ablation's changes (unchanged for align ablations)."""
    return {**section("instruct"), **INSTRUCT_ABLATIONS.get(wildcards.ablation, {})}


def ablation_decodes(wildcards):
    """Every ablated student's decoded test captions in the job's replicate, one file per ablation x subject
    it decodes."""
    run = RUN.format(replicate=wildcards.replicate)
    return [
        f"{run}/eval/ablations/{ablation}/{subject}.h5"
        for ablation, subjects in student_ablations(wildcards.replicate).items()
        for subject in subjects
    ]


def align_section(wildcards):
    """The align section of a job's replicate: its held-out subjects resolved into ``heldout`` (so rotating
    onto the subjects align.heldout named reruns nothing), the rotation switch left out.
    """
    align = {k: v for k, v in section("align").items() if k != "heldout_rotation"}
    return {**align, "heldout": heldout(wildcards.replicate)}


def ablated_align_params(wildcards):
    """The align section of an align ablation's aligner (:func:`llm4brain.align.terms.ablated_align`)."""
    return ablated_align(align_section(wildcards), wildcards.ablation)


def aligner_section(wildcards):
    """The align section an aligner was trained with: an align ablation's, else the configured one."""
    ablation = getattr(wildcards, "ablation", None)
    return (
        ablated_align_params(wildcards)
        if ablation in ABLATIONS
        else align_section(wildcards)
    )
