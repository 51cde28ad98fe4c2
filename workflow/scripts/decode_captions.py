from llm4brain.evaluate.decode import decode_captions
from llm4brain.runtime import setup_logging
from llm4brain.sections import EvaluateConfig

setup_logging(snakemake.log[0])
p = snakemake.params
decode_captions(
    subject=snakemake.wildcards.subject,
    fmri_path=snakemake.input.fmri,
    latent_path=snakemake.input.latents,
    pool_path=snakemake.input.pool,
    feature_paths=snakemake.input.features,
    captions_path=snakemake.input.captions,
    teacher_dir=snakemake.input.video_llm,
    student_dir=snakemake.input.student,
    out_path=snakemake.output[0],
    heldout=p.heldout,
    evaluate=EvaluateConfig.from_dict(p.evaluate),
    seed=p.seed,
)
