"""The vision model's own input preprocessing, split where the pipeline splits it.

``extract_frames`` applies the geometric part (resize, centre crop) to each chunk of decoded frames, so an 8-minute
1080p segment is held at the model's input size, never at full resolution; ``cache_features`` applies the
photometric part (scale to [0, 1], normalise). Both follow timm's evaluation transform for the model, whose
config is resolved once (``write_config``) so the extraction jobs import neither timm nor torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4brain.artifacts import ArtifactError, atomic_path
from llm4brain.sections import VideoConfig

if TYPE_CHECKING:
    import torch


def model_spec(video: VideoConfig) -> tuple[str, dict[str, Any]]:
    """timm ``create_model`` name and keyword arguments for the ``video`` config section."""
    spec = video.model
    kwargs = {"num_classes": 0, **spec.kwargs}
    if spec.weights:
        kwargs["pretrained_cfg_overlay"] = {"file": spec.weights}
    return spec.name, kwargs


def hf_checkpoint(video: VideoConfig) -> str:
    """The local checkpoint directory of a ``source: hf`` vision model (``model.weights``, which the schema
    leaves nullable for timm's random initialisation)."""
    if video.model.weights is None:
        raise ValueError("config video.model: source hf needs weights, the local BLIP-2 / InstructBLIP directory")
    return video.model.weights


def data_config(video: VideoConfig, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """timm's data config for the model (``model`` if built already, else built on the meta device: no
    weights, no memory), with the input size the model is actually built for and ``crop_pct`` from config
    when set; for an HF checkpoint, its image processor's (squash to the input size, its mean/std)."""
    import timm
    import torch

    if video.model.source == "hf":
        from llm4brain.video.hf_tower import hf_data_config

        return hf_data_config(hf_checkpoint(video))
    if model is None:
        name, kwargs = model_spec(video)
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **kwargs)
    overrides = {} if video.crop_pct is None else {"crop_pct": video.crop_pct}
    config = timm.data.resolve_data_config(overrides, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        config["input_size"] = (3, *img_size)
    if (config.get("crop_mode") or "center") not in ("center", "squash") or config["crop_pct"] > 1:
        raise ValueError(
            f"video.model {video.model.name}: crop_mode {config.get('crop_mode')!r} with "
            f"crop_pct {config['crop_pct']} pads the frame, which extraction does not do; only centre "
            "crops and squashing with crop_pct <= 1 are supported (set video.crop_pct)"
        )
    return config


def write_config(video: VideoConfig, out_path: str | Path) -> None:
    """``data_config`` as JSON, resolved once per workflow (importing timm costs seconds per job)."""
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(data_config(video), indent=2))


def read_config(path: str | Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
        return {**config, "input_size": tuple(config["input_size"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: not a vision input config ({err}); rerun rule vision_input") from err


def geometric(config: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames (N, H, W, 3) → uint8 (N, h, w, 3) at the model's input size, bit-identical to timm's
    evaluation transform on a PIL image (``create_transform(**config)`` up to ``ToTensor``; tested): the same
    resized size (``resized_size``), the same PIL resize, the same centre crop (``crop_offsets``).

    Resizing only the crop's area (PIL's ``box``) would halve the work but is not identical: PIL passes the
    box to C as float32, which moves the filter taps. PIL rather than timm's tensor pipeline keeps the
    per-segment extraction jobs free of torch, whose import costs more than decoding a demo segment."""
    from PIL import Image

    height, width = config["input_size"][1:]
    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }[config["interpolation"]]

    def one(frame: np.ndarray) -> np.ndarray:
        image = Image.fromarray(frame)
        size = resized_size(config, image.size)
        left, top = crop_offsets(size, (width, height))
        if size != image.size:  # torchvision leaves an image of the target size as it is
            image = image.resize(size, resample)
        return np.asarray(image.crop((left, top, left + width, top + height)))

    return lambda frames: np.stack([one(frame) for frame in frames])


def resized_size(config: dict[str, Any], image_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) timm's evaluation transform resizes an image of ``image_size`` (width, height) to
    before its centre crop (``crop_mode`` center or squash: see ``data_config``): ``squash`` both edges to
    ``size / crop_pct``; ``center`` with a square input torchvision's ``Resize(int)`` (shortest edge to
    ``size / crop_pct``, the other truncated), with a non-square one timm's ``ResizeKeepRatio`` (the edge
    that needs less scaling fits, sizes rounded)."""
    height, width = config["input_size"][1:]
    scale_h, scale_w = math.floor(height / config["crop_pct"]), math.floor(width / config["crop_pct"])
    w, h = image_size
    if config.get("crop_mode") == "squash":
        return scale_w, scale_h
    if scale_h == scale_w:
        short, long = min(w, h), max(w, h)
        new_long = int(scale_h * long / short)
        return (scale_h, new_long) if w <= h else (new_long, scale_h)
    ratio = min(h / scale_h, w / scale_w)
    return round(w / ratio), round(h / ratio)


def crop_offsets(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop`` of ``crop`` (width, height) from an image of ``size``, which
    is never smaller with ``crop_pct`` <= 1 (checked by ``data_config``)."""
    return int(round((size[0] - crop[0]) / 2.0)), int(round((size[1] - crop[1]) / 2.0))


def photometric(config: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 frames (N, h, w, 3) already at input size → normalised float (N, 3, h, w), the values of timm's
    ``ToTensor`` + ``Normalize``; in place on one contiguous buffer (each new buffer costs page faults)."""
    import torch

    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return lambda frames: frames.permute(0, 3, 1, 2).contiguous().float().div_(255.0).sub_(mean).div_(std)
