"""The results layout, written once: where a replicate's artifacts live. The Snakemake rules build their
paths from it and the library reads trained models back through it (``llm4brain decode`` on a new run), so
the two cannot drift. Torch-free: the Snakemake files import it.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "results"
# a replicate's tree (a Snakemake pattern): every seed-dependent artifact, under its seed
RUN = f"{RESULTS}/r{{replicate}}"
# inside a replicate's tree
ALIGNER = "align/model"  # pretrain_adaptor's model folder
STUDENT = "instruct/model"  # instruct_llm's model folder
FMRI = "fmri/{subject}.h5"  # preprocess_fmri's artifact (in the replicate's tree in the demo, else under results/)
ALIGNED_FMRI = "fmri/aligned/{subject}.h5"  # a subject carried into the shared space (align_heldout_fmri)
SHARED_RESPONSE = "fmri/aligned/srm.h5"  # fit_functional_alignment's maps
NEAREST_TRAIN_POOL = "eval/nearest_train/pool.h5"  # nearest_train_pool's pooled student tokens


def replicate_name(seed: int | str) -> str:
    """The folder (under ``results/``) and summary column of the replicate seeded ``seed`` (``"*"``: a glob
    of every replicate's)."""
    return RUN.removeprefix(f"{RESULTS}/").format(replicate=seed)


def replicate_dir(results: str | Path, seed: int) -> Path:
    """A replicate's tree under a results folder."""
    return Path(results) / replicate_name(seed)
