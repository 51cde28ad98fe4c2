"""``cache_features``: a frozen timm vision model over every extracted frame → float16 tokens per TR-clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from llm4brain.artifacts import atomic_h5, open_artifact, set_attrs
from llm4brain.runtime import LOG, autocast_dtype, select_device


def build_vision_model(params: dict[str, Any], seed: int) -> "torch.nn.Module":
    """The timm model named in config: random init from ``seed`` (demo) or a local weights file."""
    import timm
    import torch

    spec = params["model"]
    torch.manual_seed(seed)  # every segment's job must build the same random network
    if spec["weights"]:
        model = timm.create_model(spec["name"], pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"file": spec["weights"]}, **spec["kwargs"])
    else:
        model = timm.create_model(spec["name"], pretrained=False, num_classes=0, **spec["kwargs"])
    return model.eval()


def input_config(model: "torch.nn.Module") -> dict[str, Any]:
    """The model's preprocessing (timm ``pretrained_cfg``), with the input size it was actually built for."""
    import timm

    data_config = timm.data.resolve_data_config({}, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and tuple(data_config["input_size"][1:]) != tuple(img_size):
        data_config["input_size"] = (3, *img_size)
    return data_config


def transform(data_config: dict[str, Any]) -> "Callable[[torch.Tensor], torch.Tensor]":
    """The model's own evaluation preprocessing (timm: resize, centre crop by ``crop_pct``, normalise).

    timm's transforms accept batched float tensors, so frames go through them without PIL round trips."""
    import timm

    pipeline = timm.data.create_transform(**data_config, is_training=False)
    return lambda frames: pipeline(frames.permute(0, 3, 1, 2).float() / 255.0)


def cache_features(frames_path: str | Path, out_path: str | Path, params: dict[str, Any], seed: int) -> None:
    """Write ``/tokens`` float16 (n_tr, F, T, D) and ``/tr``; one HDF5 chunk per TR-clip."""
    import torch

    torch.set_num_threads(1)
    device = select_device(params["device"])
    model = build_vision_model(params, seed).to(device)
    data_config = input_config(model)
    prepare = transform(data_config)
    with open_artifact(frames_path, "frames", ("frames", "tr")) as src:
        frames = src["frames"][:]
        trs = src["tr"][:]
        segment = src.attrs["segment"]
    n_tr, n_f = frames.shape[:2]
    flat = torch.from_numpy(frames.reshape((n_tr * n_f,) + frames.shape[2:]))
    dtype = autocast_dtype(device)
    outputs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(flat), params["batch_size"]), desc=f"{segment} features", mininterval=1.0):
            x = prepare(flat[start : start + params["batch_size"]]).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs.append(model.forward_features(x).float().cpu())
    tokens = torch.cat(outputs).numpy().astype(np.float16)
    tokens = tokens.reshape((n_tr, n_f) + tokens.shape[1:])
    with atomic_h5(out_path, "features", params) as f:
        f.create_dataset("tokens", data=tokens, chunks=(1,) + tokens.shape[1:])
        f.create_dataset("tr", data=trs)
        set_attrs(f, {"segment": segment, "model": params["model"]["name"],
                      "weights": params["model"]["weights"] or "random-init",
                      "input_size": list(data_config["input_size"]), "crop_pct": data_config["crop_pct"],
                      "interpolation": data_config["interpolation"]})
    LOG.info("%s: tokens %s", segment, tokens.shape)
