from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.video_llm.train import train_video_llm

setup_logging(snakemake.log[0])
p = snakemake.params
train_video_llm(
    snakemake.input.features,
    snakemake.input.captions,
    snakemake.output[0],
    p.train_segments,
    p.video_llm,
    p.seed,
    Checkpoint.for_snakemake(snakemake),
)
