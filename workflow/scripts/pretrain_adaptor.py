from llm4brain.distributed import launch
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.sections import AlignConfig, EncoderConfig

if __name__ == "__main__":  # not when the data-parallel processes' server imports this script
    setup_logging(snakemake.log[0])
    p = snakemake.params
    align = AlignConfig.from_dict(p.align)
    launch(
        "llm4brain.align.train:train_brain_aligner",  # imported by the processes that run it, not by this one
        devices=snakemake.resources.devices,
        device=align.train.device,
        log_file=snakemake.log[0],
        fmri_paths=list(snakemake.input.fmri),
        feature_paths=list(snakemake.input.features),
        teacher_dir=snakemake.input.video_llm,
        model_dir=snakemake.output.model,
        latent_paths=list(snakemake.output.latents),
        metrics_path=snakemake.output.metrics,
        subjects=list(p.subjects),
        encoder=EncoderConfig.from_dict(p.encoder),
        align=align,
        seed=p.seed,
        pretrained=snakemake.input.pretrained[0] if snakemake.input.pretrained else None,
        checkpoint=Checkpoint.for_snakemake(snakemake),
    )
