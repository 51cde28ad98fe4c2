from llm4brain.instruct.train import instruct_llm
from llm4brain.runtime import setup_logging
from llm4brain.resume import Checkpoint

setup_logging(snakemake.log[0])
p = snakemake.params
instruct_llm(
    snakemake.input.fmri,
    snakemake.input.latents,
    snakemake.input.align,
    snakemake.input.features,
    snakemake.input.captions,
    snakemake.input.video_llm,
    snakemake.output.model,
    snakemake.output.log_tsv,
    p.subjects,
    p.heldout,
    p.instruct,
    p.seed,
    Checkpoint.for_snakemake(snakemake),
)
