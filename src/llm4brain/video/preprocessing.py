"""The vision model's own input preprocessing, split where the pipeline splits it.

``extract_frames`` applies the geometric part (resize, centre crop) to each chunk of decoded frames, so an 8-minute
1080p segment is held at the model's input size, never at full resolution; ``cache_features`` applies the
photometric part (scale to [0, 1], normalise). Both parts are timm's evaluation transform for the model.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def model_spec(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """timm ``create_model`` name and keyword arguments for the ``video`` config section."""
    spec = params["model"]
    kwargs = {"num_classes": 0, **spec["kwargs"]}
    if spec["weights"]:
        kwargs["pretrained_cfg_overlay"] = {"file": spec["weights"]}
    return spec["name"], kwargs


def data_config(params: dict[str, Any]) -> dict[str, Any]:
    """timm's data config for the model (built on the meta device: no weights, no memory), with the input
    size the model is actually built for and ``crop_pct`` from config when set; for an HF checkpoint, its
    image processor's (squash to the input size, its mean/std)."""
    import timm
    import torch

    if params["model"]["source"] == "hf":
        from llm4brain.video.hf_tower import hf_data_config

        return hf_data_config(params["model"]["weights"])
    name, kwargs = model_spec(params)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    overrides = {} if params["crop_pct"] is None else {"crop_pct": params["crop_pct"]}
    config = timm.data.resolve_data_config(overrides, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        config["input_size"] = (3, *img_size)
    return config


def _eval_transforms(config: dict[str, Any]) -> list:
    import timm

    return list(timm.data.create_transform(**config, is_training=False).transforms)


def geometric(config: dict[str, Any]) -> "Callable[[np.ndarray], np.ndarray]":
    """uint8 frames (N, H, W, 3) → uint8 (N, h, w, 3) at the model's input size.

    timm builds torchvision v1 transforms, which resize uint8 through float; their v2 equivalents resize
    uint8 directly, an order of magnitude faster, so Resize and CenterCrop run as v2."""
    import torch
    from torchvision.transforms import CenterCrop, Normalize, Resize, v2

    as_v2 = {Resize: lambda t: v2.Resize(t.size, t.interpolation, t.max_size, antialias=True),
             CenterCrop: lambda t: v2.CenterCrop(t.size)}
    steps = [as_v2.get(type(t), lambda t: t)(t) for t in _eval_transforms(config)
             if not isinstance(t, Normalize) and type(t).__name__ != "MaybeToTensor"]

    def apply(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # channels-last view
        for step in steps:
            x = step(x)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    return apply


def photometric(config: dict[str, Any]) -> "Callable[[torch.Tensor], torch.Tensor]":
    """uint8 frames (N, h, w, 3) already at input size → normalised float (N, 3, h, w)."""
    from torchvision.transforms import Normalize

    normalize = next(t for t in _eval_transforms(config) if isinstance(t, Normalize))
    return lambda frames: normalize(frames.permute(0, 3, 1, 2).float() / 255.0)
