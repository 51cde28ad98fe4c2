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


def keep_4bit_training_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Stop bitsandbytes repacking ``model``'s 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit layer's weight in place the first time the
    layer runs in eval mode without gradients, and from then on computes it with a kernel that has no backward
    pass. A student validated during training would train on through that kernel, and the repacking fails
    outright on layers narrower than a quantisation block (the test models'). Kept in the layout it was
    loaded in, every CPU computes as one without AVX512-BF16 does, in training and in evaluation.

    Args:
        model: a model loaded with :func:`quantized_loading`; modules other than 4-bit layers are untouched.

    Returns:
        ``model``, changed in place.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):  # bitsandbytes.nn.Linear4bit, without importing it
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010 (nn.Module types its attributes)
    return model
