from llm4brain.evaluate.decode import decode_ablation
from llm4brain.runtime import setup_logging
from llm4brain.sections import EvaluateConfig

setup_logging(snakemake.log[0])
p = snakemake.params
decode_ablation(
    subject=snakemake.wildcards.subject,
    ablation=snakemake.wildcards.ablation,
    fmri_path=snakemake.input.fmri,
    latent_path=snakemake.input.latents,
    captions_path=snakemake.input.captions,
    teacher_dir=snakemake.input.video_llm,
    student_dir=snakemake.input.student,
    out_path=snakemake.output[0],
    heldout=p.heldout,
    evaluate=EvaluateConfig.from_dict(p.evaluate),
    seed=p.seed,
)
