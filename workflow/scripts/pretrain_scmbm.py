from llm4brain.distributed import launch
from llm4brain.fmri.collections import shards_with_samples
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.scmbm.train import pretrain_scmbm

if __name__ == "__main__":  # not when the data-parallel workers re-import this script
    setup_logging(snakemake.log[0])
    p = snakemake.params
    launch(
        pretrain_scmbm,
        devices=snakemake.resources.devices,
        device=p.scmbm["train"]["device"],
        log_file=snakemake.log[0],
        fmri_paths=list(snakemake.input.fmri),
        collection_paths=shards_with_samples(snakemake.input.collections),
        out_dir=snakemake.output[0],
        encoder_params=p.encoder,
        params=p.scmbm,
        seed=p.seed,
        checkpoint=Checkpoint.for_snakemake(snakemake),
    )
