from llm4brain.instruct.train import instruct_llm
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
instruct_llm(
    fmri_paths=snakemake.input.fmri,
    latent_paths=snakemake.input.latents,
    align_dir=snakemake.input.align,
    feature_paths=snakemake.input.features,
    captions_path=snakemake.input.captions,
    teacher_dir=snakemake.input.video_llm,
    model_dir=snakemake.output.model,
    log_tsv=snakemake.output.log_tsv,
    subjects=p.subjects,
    heldout=p.heldout,
    params=p.instruct,
    seed=p.seed,
    checkpoint=Checkpoint.for_snakemake(snakemake),
)
