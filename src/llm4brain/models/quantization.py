"""bitsandbytes 8-bit / 4-bit NF4 loading arguments for ``from_pretrained``.

bitsandbytes takes seconds to import, so ``BitsAndBytesConfig`` is built only when a config asks for it.
"""

from __future__ import annotations

from typing import Any

import torch


def quantized_loading(kind: str, device: torch.device | str, skip: list[str] | None = None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load in ``kind`` (``none``, ``8bit``, ``4bit``: NF4 with
    double quantisation, bf16 compute on CUDA) onto ``device``; ``skip`` names modules kept in full precision
    (a multimodal checkpoint's vision tower, Q-Former and projection; ``lm_head`` then has to be named too)."""
    if kind == "none":
        return {}
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        compute = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            llm_int8_skip_modules=skip,
        )
    return {"quantization_config": config, "device_map": {"": str(device)}}
