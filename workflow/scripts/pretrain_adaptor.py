from llm4brain.align.train import pretrain_adaptor
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
pretrain_adaptor(
    fmri_paths=snakemake.input.fmri,
    feature_paths=snakemake.input.features,
    teacher_dir=snakemake.input.video_llm,
    model_dir=snakemake.output.model,
    latent_paths=snakemake.output.latents,
    metrics_path=snakemake.output.metrics,
    subjects=p.subjects,
    encoder_params=p.encoder,
    params=p.align,
    seed=p.seed,
    pretrained=snakemake.input.pretrained[0] if snakemake.input.pretrained else None,
    checkpoint=Checkpoint.for_snakemake(snakemake),
)
