from llm4brain.align.scmbm import pretrain_scmbm
from llm4brain.fmri.collections import shards_with_samples
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
pretrain_scmbm(
    fmri_paths=snakemake.input.fmri,
    collection_paths=shards_with_samples(snakemake.input.collections),
    out_dir=snakemake.output[0],
    encoder_params=p.encoder,
    params=p.scmbm,
    seed=p.seed,
    checkpoint=Checkpoint.for_snakemake(snakemake),
)
