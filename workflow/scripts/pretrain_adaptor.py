from llm4brain.align.train import pretrain_adaptor
from llm4brain.runtime import setup_logging
from llm4brain.resume import Checkpoint

setup_logging(snakemake.log[0])
p = snakemake.params
pretrain_adaptor(
    snakemake.input.fmri,
    snakemake.input.features,
    snakemake.input.video_llm,
    snakemake.output.model,
    snakemake.output.latents,
    snakemake.output.metrics,
    p.subjects,
    p.encoder,
    p.align,
    p.seed,
    snakemake.input.pretrained[0] if snakemake.input.pretrained else None,
    Checkpoint.for_snakemake(snakemake),
)
