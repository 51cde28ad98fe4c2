"""The vision model's own input preprocessing, split where the pipeline splits it.

``extract_frames`` applies the geometric part (resize, centre crop) to each chunk of decoded frames, so an 8-minute
1080p segment is held at the model's input size, never at full resolution; ``cache_features`` applies the
photometric part (scale to [0, 1], normalise). Both follow timm's evaluation transform for the model, whose
config is resolved once (``write_config``) so the extraction jobs import neither timm nor torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm4brain.artifacts import ArtifactError, atomic_path


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


def write_config(params: dict[str, Any], out_path: str | Path) -> None:
    """``data_config`` as JSON, resolved once per workflow (importing timm costs seconds per job)."""
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(data_config(params), indent=2))


def read_config(path: str | Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
        return {**config, "input_size": tuple(config["input_size"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: not a vision input config ({err}); rerun rule vision_input") from err


def geometric(config: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames (N, H, W, 3) → uint8 (N, h, w, 3) at the model's input size, with PIL, as timm's
    evaluation transform does for a PIL image: resize (shortest edge to ``size / crop_pct``, or both edges
    for ``crop_mode: squash`` and non-square inputs) with the configured interpolation, then centre crop.

    PIL rather than timm's tensor pipeline keeps the per-segment extraction jobs free of torch, whose
    import costs more than decoding a demo segment."""
    from PIL import Image

    height, width = config["input_size"][1:]
    scale = (math.floor(height / config["crop_pct"]), math.floor(width / config["crop_pct"]))
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}[config["interpolation"]]
    squash = config.get("crop_mode") == "squash" or height != width

    def one(frame: np.ndarray) -> np.ndarray:
        image = Image.fromarray(frame)
        if squash:
            size = (scale[1], scale[0])
        else:  # shortest edge to the scale size, aspect kept
            short = min(image.size)
            size = (round(image.width * scale[0] / short), round(image.height * scale[0] / short))
        image = image.resize(size, resample) if size != image.size else image
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return np.asarray(image.crop((left, top, left + width, top + height)))

    return lambda frames: np.stack([one(frame) for frame in frames])


def photometric(config: dict[str, Any]) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """uint8 frames (N, h, w, 3) already at input size → normalised float (N, 3, h, w)."""
    import torch

    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return lambda frames: (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
