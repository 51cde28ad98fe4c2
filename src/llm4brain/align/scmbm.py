"""``pretrain_scmbm``: masked brain modelling of the fMRI encoder on every subject's training fMRI.

No labels are used, so the held-out subjects' runs are included: the encoder learns their data too before
any alignment. The test split is never seen. Writes ``encoder.safetensors`` (our encoder's names, what
``pretrain_adaptor`` starts from), ``config.json`` and ``train_log.tsv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4brain.align.windows import windows
from llm4brain.artifacts import ArtifactError, atomic_path, read_split
from llm4brain.models.fmri_encoder import build_encoder
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.weights import save_weights
from llm4brain.runtime import LOG, seed_everything, select_device
from llm4brain.resume import Checkpoint
from llm4brain.training import fit


def training_windows(fmri_paths: list[str], window: int) -> np.ndarray:
    """Every subject's training-split windows, stacked; all subjects must share one grid."""
    stacks = []
    for path in fmri_paths:
        bold, keys = read_split(path, "fmri", "train", "bold")
        if stacks and bold.shape[1:] != stacks[0].shape[2:]:
            raise ArtifactError(f"{path}: fMRI grid {bold.shape[1:]} differs from {fmri_paths[0]}'s "
                                f"{stacks[0].shape[2:]} (set fmri.resample and a common mask)")
        stacks.append(windows(bold, keys, window))
    return np.concatenate(stacks)


def pretrain_scmbm(fmri_paths: list[str], out_dir: str, encoder_params: dict[str, Any], params: dict[str, Any],
                   seed: int, checkpoint: Checkpoint | None = None) -> None:
    seed_everything(seed + 15, params["train"]["threads"])
    samples = torch.from_numpy(training_windows(fmri_paths, encoder_params["window"]))
    grid = tuple(samples.shape[2:])
    generator = torch.Generator().manual_seed(seed + 16)
    n_val = int(round(len(samples) * params["train"]["val_fraction"]))
    order = torch.randperm(len(samples), generator=generator) if n_val else torch.arange(len(samples))
    train, val = samples[order[n_val:]], samples[order[:n_val]]
    decoder = params["decoder"]
    device = select_device(params["train"]["device"])
    model = MaskedBrainModel(build_encoder(grid, encoder_params), decoder["dim"], decoder["depth"],
                             decoder["num_heads"], params["mask_ratio"]).to(device)
    LOG.info("masked brain modelling on %d samples of grid %s (%d to validate on), mask ratio %g", len(train),
             grid, len(val), params["mask_ratio"])
    batch_size = params["train"]["batch_size"]

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        batch = train[torch.randint(len(train), (batch_size,), generator=generator)].to(device)
        loss, _ = model(batch, generator)
        return loss, {"masked_mse": loss.item()}

    def validate() -> float:
        """The masked loss on the held-out samples, with the same masks every time."""
        model.eval()
        masks = torch.Generator().manual_seed(seed + 17)
        losses = [model(val[i:i + batch_size].to(device), masks)[0] * len(val[i:i + batch_size])
                  for i in range(0, len(val), batch_size)]
        return float(sum(losses) / len(val))

    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        fit(model.parameters(), loss_fn, params["train"], "pretrain_scmbm", tmp / "train_log.tsv",
            checkpoint=checkpoint, generators=[generator], validate=validate if n_val else None, device=device)
        save_weights(model.encoder, tmp / "encoder.safetensors")
        (Path(tmp) / "config.json").write_text(json.dumps({"grid": list(grid), "encoder": encoder_params,
                                                           "scmbm": params}, indent=2))
