from llm4brain.evaluate.decode import decode_captions
from llm4brain.runtime import setup_logging
from llm4brain.sections import EvaluateConfig

# rules decode_captions (every source) and decode_ablation (an ablated student's fMRI source alone)
setup_logging(snakemake.log[0])
p = snakemake.params
decode_captions(
    subject=snakemake.wildcards.subject,
    ablation=snakemake.wildcards.get("ablation"),
    fmri_path=snakemake.input.fmri,
    latent_path=snakemake.input.latents,
    pool_path=snakemake.input.get("pool"),
    feature_paths=snakemake.input.get("features", []),
    captions_path=snakemake.input.captions,
    teacher_dir=snakemake.input.video_llm,
    student_dir=snakemake.input.student,
    out_path=snakemake.output[0],
    heldout=p.heldout,
    evaluate=EvaluateConfig.from_dict(p.evaluate),
    seed=p.seed,
)
