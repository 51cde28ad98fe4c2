from llm4brain.distributed import launch
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.sections import InstructConfig

if __name__ == "__main__":  # not when the data-parallel processes' server imports this script
    setup_logging(snakemake.log[0])
    p = snakemake.params
    launch(
        "llm4brain.instruct.train:instruct_llm",  # imported by the processes that run it, not by this one
        devices=snakemake.resources.devices,
        device=p.instruct["train"]["device"],
        log_file=snakemake.log[0],
        fmri_paths=list(snakemake.input.fmri),
        latent_paths=list(snakemake.input.latents),
        align_dir=snakemake.input.align,
        feature_paths=list(snakemake.input.features),
        captions_path=snakemake.input.captions,
        teacher_dir=snakemake.input.video_llm,
        model_dir=snakemake.output.model,
        log_tsv=snakemake.output.log_tsv,
        subjects=list(p.subjects),
        heldout=list(p.heldout),
        instruct=InstructConfig.from_dict(p.instruct),
        seed=p.seed,
        checkpoint=Checkpoint.for_snakemake(snakemake),
    )
