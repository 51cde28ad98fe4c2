from llm4brain.distributed import launch
from llm4brain.fmri.collections import shards_with_samples
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.sections import EncoderConfig, ScmbmConfig

if __name__ == "__main__":  # not when the data-parallel processes' server imports this script
    setup_logging(snakemake.log[0])
    p = snakemake.params
    scmbm = ScmbmConfig.from_dict(p.scmbm)
    launch(
        "llm4brain.scmbm.train:pretrain_scmbm",  # imported by the processes that run it, not by this one
        devices=snakemake.resources.devices,
        device=scmbm.train.device,
        log_file=snakemake.log[0],
        fmri_paths=list(snakemake.input.fmri),
        collection_paths=shards_with_samples(snakemake.input.collections),
        out_dir=snakemake.output[0],
        encoder=EncoderConfig.from_dict(p.encoder),
        scmbm=scmbm,
        seed=p.seed,
        checkpoint=Checkpoint.for_snakemake(snakemake),
    )
