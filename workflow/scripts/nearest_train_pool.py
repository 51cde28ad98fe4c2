from llm4brain.evaluate.decode import nearest_train_pool
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
nearest_train_pool(
    subjects=snakemake.params.subjects,
    fmri_paths=snakemake.input.fmri,
    latent_paths=snakemake.input.latents,
    teacher_dir=snakemake.input.video_llm,
    student_dir=snakemake.input.student,
    out_path=snakemake.output[0],
    device=snakemake.params.device,
    seed=snakemake.params.seed,
)
