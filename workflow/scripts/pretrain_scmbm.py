from llm4brain.align.scmbm import pretrain_scmbm
from llm4brain.runtime import setup_logging
from llm4brain.resume import Checkpoint

setup_logging(snakemake.log[0])
p = snakemake.params
pretrain_scmbm(snakemake.input.fmri, snakemake.output[0], p.encoder, p.scmbm, p.seed, Checkpoint.for_snakemake(snakemake))
