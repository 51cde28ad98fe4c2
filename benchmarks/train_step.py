"""Input-pipeline overhead of the align stage's training step, as a share of the step (goal ≤ 10 %).

    .venv/bin/python benchmarks/train_step.py

Writes the demo-size problem to HDF5 in a temporary folder (3 subjects, 2 labelled, 16 × 16 × 12 grids,
2-TR windows; the demo's encoder and a teacher Q-Former sized as the demo's) and times, over the same seeded
batches, what pretrain_adaptor's streams serve a step (choosing clips and repeats, reading the rows, gathering
the windows) against a whole optimiser step (the draw, forward, the loss terms, backward, AdamW). Prints both
and their ratio; ≤ 0.10 meets the goal.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4brain.align.losses import mmd
from llm4brain.align.model import BrainAligner
from llm4brain.align.objective import alignment_terms
from llm4brain.artifacts import atomic_h5, write_keys
from llm4brain.fmri.stream import BoldSplit, clip_stream, open_splits, row_stream
from llm4brain.models.video_llm import VideoQFormer, qformer_config
from llm4brain.sections import AlignConfig, EncoderConfig, VideoLlmQformerConfig

GRID, WINDOW, CLIPS, REPEATS, BATCH, STEPS = (16, 16, 12), 2, 360, 2, 32, 30
ENCODER: dict[str, Any] = {
    "window": WINDOW,
    "tokenizer": {"channels": 16, "patch": 8, "vector_patch": 16},
    "dim": 64,
    "depth": 2,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "dropout": 0.3,
}
ALIGN = {
    "encoder_tuning": "full",
    "temperature": 0.07,
    "adaptor": {"kind": "bottleneck", "bottleneck": 16, "scale_init": 1e-3, "lora_r": 8, "lora_alpha": 16},
}
QFORMER: dict[str, Any] = {
    "num_queries": 8,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
    "dropout": 0.1,
}


def write_subject(path: Path) -> None:
    """A subject's train split: every clip's run twice over, rows chunked one by one as preprocess_fmri does."""
    keys = [(f"seg{c // 30:02d}", c % 30) for c in range(CLIPS)] * REPEATS
    with atomic_h5(path, "fmri") as f:
        group = f.create_group("train")
        group.create_dataset("bold", data=torch.randn(len(keys), *GRID).numpy(), chunks=(1, *GRID))
        write_keys(group, [k[0] for k in keys], [k[1] for k in keys])


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{s}.h5" for s in ("sub-01", "sub-02", "sub-03")]
        for path in paths:
            write_subject(path)
        run(open_splits([str(p) for p in paths]))


def run(files: list[BoldSplit]) -> None:
    repeats = [[np.array([c + r * CLIPS for r in range(REPEATS)]) for c in range(CLIPS)]] * 2
    labelled = ["sub-01", "sub-02"]
    qformer = VideoQFormer(
        qformer_config(VideoLlmQformerConfig.from_dict(QFORMER), 64), num_frames=4, num_queries=QFORMER["num_queries"]
    )
    model = BrainAligner(GRID, EncoderConfig.from_dict(ENCODER), AlignConfig.from_dict(ALIGN), qformer).train()
    targets = torch.randn(CLIPS, QFORMER["num_queries"], QFORMER["hidden_size"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def batches():  # as pretrain_adaptor builds them, with the default buffer shared by the two streams
        pairs = clip_stream(files[:2], repeats, WINDOW, 256, seed=1)
        heldout = row_stream(files[2:], [np.arange(files[2].n_rows)], WINDOW, 256, seed=2)

        def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            pick, windows = pairs.next(BATCH)
            return pick, windows.transpose(0, 1).flatten(0, 1), heldout.next(BATCH)[1][:, 0]

        return draw

    draw = batches()
    start = time.perf_counter()
    for _ in range(STEPS):
        draw()
    draw_s = (time.perf_counter() - start) / STEPS

    step = batches()
    start = time.perf_counter()
    for _ in range(STEPS):
        pick, inputs, target = step()
        terms, pooled = alignment_terms(model, len(labelled), pick, inputs, targets[pick])
        loss = sum(terms.values()) + mmd(pooled, model(target).mean(1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step_s = (time.perf_counter() - start) / STEPS
    print(
        f"align step (batch {BATCH} clips x {len(labelled)} subjects + {BATCH} held-out windows of "
        f"{WINDOW} x {GRID}): input pipeline {draw_s * 1e3:.1f} ms of a {step_s * 1e3:.0f} ms step -> "
        f"overhead {draw_s / step_s:.3f} (goal <= 0.10)"
    )


if __name__ == "__main__":
    main()
