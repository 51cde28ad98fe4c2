"""How the student's LLM is tuned: full fine-tune (the demo's tiny Llama), LoRA through peft on a frozen
base, or frozen (the base may be loaded in 8-bit or 4-bit: ``models.quantization``).

peft takes seconds to import, so it is imported here, only when a config asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from transformers import PreTrainedModel

from llm4brain.sections import InstructLlmConfig

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

ADAPTER_DIR = "llm_adapter"


def tune(llm: PreTrainedModel, settings: InstructLlmConfig) -> PreTrainedModel | PeftModel:
    """Set what trains: every weight (full), LoRA adapters on a frozen base (lora), nothing (frozen)."""
    if settings.tuning == "full":
        return llm.requires_grad_(True)
    llm.requires_grad_(False)
    if settings.gradient_checkpointing:
        llm.gradient_checkpointing_enable()
    if settings.tuning == "frozen":
        return llm
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if settings.quantization != "none":
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=settings.gradient_checkpointing)
    lora = settings.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; its scale alpha / r takes any number
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, config)


def save_tuned(llm: PreTrainedModel | PeftModel, directory: Path, settings: InstructLlmConfig) -> None:
    """Only what was trained: the whole LLM (full), the LoRA adapter (lora), nothing (frozen)."""
    if settings.tuning == "full":
        cast("PreTrainedModel", llm).save_pretrained(directory / "llm", safe_serialization=True)  # tune kept it
    elif settings.tuning == "lora":
        lora = cast("PeftModel", llm)  # what tune wraps the base in, with a LoraConfig
        config = cast("LoraConfig", lora.peft_config["default"])
        # peft keeps target_modules as a set and writes it in set order, which follows PYTHONHASHSEED: a
        # sorted list makes adapter_config.json the same file on every run
        config.target_modules = sorted(cast("set[str]", config.target_modules))  # config gives a list of names
        # peft annotates save_directory as str; it takes any path
        lora.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)  # type: ignore[arg-type]


def load_adapter(base: PreTrainedModel, student_dir: Path, settings: InstructLlmConfig) -> PreTrainedModel | PeftModel:
    """The student's LLM on top of its base as ``save_tuned`` left it: the LoRA adapter applied (lora), or
    the base as given (full: the caller loaded the tuned weights; frozen: nothing was trained)."""
    if settings.tuning != "lora":
        return base
    from peft import PeftModel

    return PeftModel.from_pretrained(base, student_dir / ADAPTER_DIR)
