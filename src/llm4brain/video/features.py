"""``cache_features``: a frozen timm vision model over every extracted frame → float16 tokens per TR-clip."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from tqdm import tqdm

from llm4brain.artifacts import open_artifact, set_attrs
from llm4brain.resume import Checkpoint, ResumableH5
from llm4brain.runtime import LOG, autocast, autocast_dtype, select_device
from llm4brain.sections import VideoConfig
from llm4brain.video.preprocessing import data_config, hf_checkpoint, model_spec, photometric

if TYPE_CHECKING:
    import torch

RECORD_SECONDS = 60.0  # a kill loses at most this much of a segment's forward passes (+ the batch running)


def build_vision_model(video: VideoConfig, seed: int) -> torch.nn.Module:
    """The vision model in config: a timm model (random init from ``seed`` for the demo, or a local weights
    file), or the vision tower (+ image Q-Former) of a local BLIP-2 / InstructBLIP directory."""
    import timm
    import torch

    if video.model.source == "hf":
        from llm4brain.video.hf_tower import HFVisionTower

        return HFVisionTower(hf_checkpoint(video), qformer=video.cache == "qformer")
    name, kwargs = model_spec(video)
    torch.manual_seed(seed)  # every segment's job must build the same random network
    return timm.create_model(name, pretrained=bool(video.model.weights), **kwargs).eval()


class ClipBatches:
    """Whole TR clips of a frames artifact, normalised for the model: a map-style dataset whose items are
    batches, so DataLoader workers read and normalise the next batches while the model runs."""

    def __init__(self, path: str | Path, frames_per_batch: int, prepare: Callable) -> None:
        with open_artifact(path, "frames", ("frames", "tr")) as f:
            self.n_tr, self.n_f = f["frames"].shape[:2]
        self.path, self.prepare = path, prepare
        self.clips = max(1, frames_per_batch // self.n_f)
        self.frames: h5py.Dataset | None = None  # opened in the process that reads (a worker, after the fork)

    def __len__(self) -> int:
        return -(-self.n_tr // self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch

        if self.frames is None:  # looked up once: an h5py lookup holds the GIL the model's forward needs
            self.frames = h5py.File(self.path, "r")["frames"]
        frames = torch.from_numpy(self.frames[i * self.clips : (i + 1) * self.clips])
        return self.prepare(frames.flatten(0, 1))


def prefetched(batches: ClipBatches, start: int = 0, ahead: int = 2) -> Iterator[torch.Tensor]:
    """Batches ``start``, ``start + 1``, … in order, each read and normalised in a thread while the model runs
    on the one before: for a small model, a DataLoader process costs more to start and feed than it saves."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(batches.__getitem__, i) for i in range(start, min(start + ahead, len(batches))))
        for i in range(start + ahead, len(batches) + ahead):
            batch = pending.popleft().result()
            if i < len(batches):
                pending.append(pool.submit(batches.__getitem__, i))
            yield batch


def write_clips(tokens: h5py.Dataset, first: int, clips: np.ndarray) -> None:
    """Store ``clips`` as TR clips ``first``, ``first + 1``, …: each is one whole unfiltered chunk, written as
    is, without the selection and chunk cache a sliced write goes through."""
    for i, clip in enumerate(clips):
        tokens.id.write_direct_chunk((first + i,) + (0,) * clip.ndim, clip)


def cache_features(
    frames_path: str | Path,
    out_path: str | Path,
    video: VideoConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Write ``/tokens`` float16 (n_tr, F, T, D) and ``/tr``; one HDF5 chunk per TR-clip, written batch by
    batch (a segment's ViT-g tokens would take gigabytes held whole) into the artifact's resumable copy at
    ``checkpoint.path`` (default: ``.resume/`` beside ``out_path``): a rerun after a kill computes only the
    clips not yet recorded there (every ``RECORD_SECONDS``). ``video.workers`` DataLoader processes read and
    normalise frames while the model runs (0: a thread of this process).

    Args:
        frames_path: the segment's frames artifact (``results/frames/{segment}.h5``, from
            :func:`llm4brain.video.frames.extract_frames`).
        out_path: the features artifact to write (``results/features/{segment}.h5``); it appears only once
            complete.
        video: the ``video`` config section; reads ``model`` (``source``, ``name``, ``weights``,
            ``kwargs``), ``cache``, ``batch_size``, ``workers`` and ``device``.
        seed: seeds the network's random initialisation when ``video.model.weights`` is null (the demo), so
            every segment's job builds the same one; the workflow passes ``seed`` (the replicate's in the demo).
        checkpoint: where the resumable copy is kept and the job it belongs to (the workflow's is named by
            rule and segment); None = ``.resume/cache_features_{segment}.h5`` beside ``out_path``, resumed
            only for the same frames file, weights file, ``video``, ``seed`` and device type.

    Raises:
        ArtifactError: ``frames_path`` is not a frames artifact with ``frames`` and ``tr`` datasets.
        ValueError: the frames are not the model's input size (extracted for another model).
    """
    import torch

    torch.set_num_threads(1)
    device = select_device(video.device)
    model = build_vision_model(video, seed).to(device)
    config = data_config(video, model)
    with open_artifact(frames_path, "frames", ("frames", "tr")) as src:
        shape = src["frames"].shape
        trs = src["tr"][:]
        segment = src.attrs["segment"]
    if tuple(shape[2:4]) != tuple(config["input_size"][1:]):
        raise ValueError(
            f"{frames_path}: frames are {shape[2]}x{shape[3]}, the model takes "
            f"{config['input_size'][1]}x{config['input_size'][2]}; rerun extract_frames"
        )
    batches = ClipBatches(frames_path, video.batch_size, photometric(config))
    inputs = [str(frames_path)] + ([video.model.weights] if video.model.weights else [])
    checkpoint = checkpoint or Checkpoint.for_job(
        f"cache_features_{Path(out_path).stem}",
        inputs,
        {"video": video.to_dict(), "seed": seed},
        Path(out_path).parent,
        ".h5",
    )
    out = ResumableH5(
        out_path,
        "features",
        video.to_dict(),
        checkpoint.where(device.type, str(autocast_dtype(device))),
        RECORD_SECONDS,
    )
    first = out.done // batches.clips
    workers = video.workers
    loader = (
        iter(
            torch.utils.data.DataLoader(
                batches,  # type: ignore[arg-type]  # any map-style dataset works; torch annotates its Dataset class
                batch_size=None,
                sampler=range(first, len(batches)),
                num_workers=workers,
                prefetch_factor=2,
                pin_memory=device.type == "cuda",
            )
        )
        if workers
        else prefetched(batches, first)
    )  # workers start now, not holding the file below
    with out, torch.inference_mode(), autocast(device):
        f = out.file
        assert f is not None  # opened by ``with out``
        if not out.done:  # everything but the tokens is written before the first record
            f.create_dataset("tr", data=trs)
            set_attrs(
                f,
                {
                    "segment": segment,
                    "model": video.model.name,
                    "source": video.model.source,
                    "cache": video.cache,
                    "weights": video.model.weights or "random-init",
                    "input_size": list(config["input_size"]),
                },
            )
        done = first * batches.clips
        dataset: h5py.Dataset | None = f["tokens"] if out.done else None
        for x in tqdm(loader, desc=f"{segment} features", mininterval=1.0, initial=first, total=len(batches)):
            # timm models and HFVisionTower define it; torch types a Module's attributes as Tensor | Module
            tokens = model.forward_features(x.to(device, non_blocking=True))  # type: ignore[operator]
            tokens = (tokens[:, :1] if video.cache == "vit_cls" else tokens).to(torch.float16).cpu().numpy()
            tokens = tokens.reshape((-1, shape[1]) + tokens.shape[1:])
            if dataset is None:  # its shape is known from the first batch
                dataset = out.allocate(
                    "tokens", tuple(shape[:2]) + tokens.shape[2:], tokens.dtype, (1,) + tokens.shape[1:]
                )
            write_clips(dataset, done, tokens)
            done += len(tokens)
            out.advance(done)
        assert dataset is not None  # a frames artifact holds at least one TR clip
        LOG.info("%s: tokens %s", segment, dataset.shape)
