"""``pretrain_scmbm``: masked brain modelling of the fMRI encoder on unlabelled fMRI: every task subject's
training split and the unlabelled collections (``scmbm.collections``), streamed from disk.

No labels are used, so the held-out subjects' runs are included: the encoder learns their data too before
any alignment. The test split is never read. Writes ``encoder.safetensors`` (our encoder's names, what
``pretrain_adaptor`` starts from), ``config.json`` and ``train_log.tsv``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from llm4brain.distributed import world
from llm4brain.fmri.stream import (
    InMemorySamples,
    ShuffledStream,
    iter_windows,
    open_splits,
    row_stream,
    split_rows,
)
from llm4brain.models.fmri_encoder import build_encoder
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.weights import save_weights
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG
from llm4brain.sections import EncoderConfig, ScmbmConfig
from llm4brain.seeds import SeedOffset
from llm4brain.training import begin_stage, fit, model_folder


def pretrain_scmbm(
    *,
    fmri_paths: Sequence[str],
    collection_paths: Sequence[str] = (),
    out_dir: str,
    encoder: EncoderConfig,
    scmbm: ScmbmConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
    in_memory: bool = False,
) -> None:
    """Pretrain the encoder by masked brain modelling on the ``train`` split of every subject's fMRI;
    ``scmbm.train.val_fraction`` of each file's rows are validated on.

    Args:
        fmri_paths: the task subjects' preprocessed fMRI.
        collection_paths: unlabelled collection subjects' files (same schema).
        out_dir: where the encoder, its config and the train log go.
        encoder: the ``encoder`` section.
        scmbm: the ``scmbm`` section.
        seed: the replicate's seed.
        checkpoint: where a killed run resumes from.
        in_memory: load every window into memory instead of streaming: the reference that streaming is
            tested and benchmarked against (same samples in the same order while the buffer holds all the
            data).
    """
    train_params, window = scmbm.train, encoder.window
    device = begin_stage(train_params, seed + SeedOffset.SCMBM)
    files = open_splits([*fmri_paths, *collection_paths], "train")
    grid = files[0].shape
    rows, val_rows = zip(
        *(
            split_rows(f.n_rows, train_params.val_fraction, seed + SeedOffset.SCMBM_SAMPLES, i)
            for i, f in enumerate(files)
        ),
        strict=True,
    )
    samples: InMemorySamples | ShuffledStream
    shard = world()  # this process's share of every batch (one process: all of it)
    if in_memory:
        samples = InMemorySamples(
            files, list(rows), window, seed + SeedOffset.SCMBM_SAMPLES, rank=shard.rank, world_size=shard.size
        )
    else:
        samples = row_stream(
            files,
            list(rows),
            window,
            train_params.buffer_mb,
            seed + SeedOffset.SCMBM_SAMPLES,
            rank=shard.rank,
            world_size=shard.size,
            workers=train_params.loader_workers,
        )
    n_val = sum(map(len, val_rows))
    generator = torch.Generator().manual_seed(seed + SeedOffset.SCMBM_SAMPLES)  # the masks
    decoder = scmbm.decoder
    model = MaskedBrainModel(
        build_encoder(grid, encoder), decoder.dim, decoder.depth, decoder.num_heads, scmbm.mask_ratio
    ).to(device)
    LOG.info(
        "masked brain modelling on %d samples of grid %s from %d files (%d to validate on), mask ratio %g",
        sum(map(len, rows)),
        grid,
        len(files),
        n_val,
        scmbm.mask_ratio,
    )
    batch_size = train_params.batch_size

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        loss, _ = model(samples.next(batch_size)[1][:, 0].to(device), generator, shard)
        return loss, {"masked_mse": loss.item()}

    def validate() -> float:
        """The masked loss on the held-out rows' windows, read in order, with the same masks every time."""
        model.eval()
        masks, total = torch.Generator().manual_seed(seed + SeedOffset.SCMBM_VALIDATION_MASKS), 0.0
        for f, held in zip(files, val_rows, strict=True):
            for batch in iter_windows(f, held, window, batch_size):
                total += model(batch.to(device), masks)[0] * len(batch)
        return float(total / n_val)

    history = fit(
        model,
        loss_fn,
        train_params,
        "pretrain_scmbm",
        checkpoint=checkpoint,
        generators=[generator],
        validate=validate if n_val else None,
        device=device,
        stateful=[samples],
    )
    if not shard.main:
        return
    with model_folder(out_dir, history) as tmp:
        save_weights(model.encoder, tmp / "encoder.safetensors")
        (Path(tmp) / "config.json").write_text(
            json.dumps({"grid": list(grid), "encoder": encoder.to_dict(), "scmbm": scmbm.to_dict()}, indent=2)
        )
