"""``cache_features``: a frozen timm vision model over every extracted frame → float16 tokens per TR-clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llm4brain.artifacts import atomic_h5, open_artifact, set_attrs
from llm4brain.runtime import LOG, autocast_dtype, select_device
from llm4brain.video.preprocessing import data_config, model_spec, photometric


def build_vision_model(params: dict[str, Any], seed: int) -> "torch.nn.Module":
    """The vision model in config: a timm model (random init from ``seed`` for the demo, or a local weights
    file), or the vision tower (+ image Q-Former) of a local BLIP-2 / InstructBLIP directory."""
    import timm
    import torch

    if params["model"]["source"] == "hf":
        from llm4brain.video.hf_tower import HFVisionTower

        return HFVisionTower(params["model"]["weights"], qformer=params["cache"] == "qformer")
    name, kwargs = model_spec(params)
    torch.manual_seed(seed)  # every segment's job must build the same random network
    return timm.create_model(name, pretrained=bool(params["model"]["weights"]), **kwargs).eval()


def cache_features(frames_path: str | Path, out_path: str | Path, params: dict[str, Any], seed: int) -> None:
    """Write ``/tokens`` float16 (n_tr, F, T, D) and ``/tr``; one HDF5 chunk per TR-clip."""
    import torch

    torch.set_num_threads(1)
    device = select_device(params["device"])
    model = build_vision_model(params, seed).to(device)
    config = data_config(params)
    prepare = photometric(config)
    with open_artifact(frames_path, "frames", ("frames", "tr")) as src:
        frames = src["frames"][:]
        trs = src["tr"][:]
        segment = src.attrs["segment"]
    if tuple(frames.shape[2:4]) != tuple(config["input_size"][1:]):
        raise ValueError(f"{frames_path}: frames are {frames.shape[2]}x{frames.shape[3]}, the model takes "
                         f"{config['input_size'][1]}x{config['input_size'][2]}; rerun extract_frames")
    n_tr, n_f = frames.shape[:2]
    flat = torch.from_numpy(frames.reshape((n_tr * n_f,) + frames.shape[2:]))
    dtype = autocast_dtype(device)
    outputs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(flat), params["batch_size"]), desc=f"{segment} features", mininterval=1.0):
            x = prepare(flat[start : start + params["batch_size"]]).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                tokens = model.forward_features(x)
                outputs.append((tokens[:, :1] if params["cache"] == "vit_cls" else tokens).float().cpu())
    tokens = torch.cat(outputs).numpy().astype(np.float16)
    tokens = tokens.reshape((n_tr, n_f) + tokens.shape[1:])
    with atomic_h5(out_path, "features", params) as f:
        f.create_dataset("tokens", data=tokens, chunks=(1,) + tokens.shape[1:])
        f.create_dataset("tr", data=trs)
        set_attrs(f, {"segment": segment, "model": params["model"]["name"], "source": params["model"]["source"],
                      "cache": params["cache"],
                      "weights": params["model"]["weights"] or "random-init",
                      "input_size": list(config["input_size"])})
    LOG.info("%s: tokens %s", segment, tokens.shape)
