"""A local InstructBLIP-Video checkpoint as the teacher: built tiny from config and saved as transformers
saves it, then loaded through ``import_video_llm``'s settings; its video tokens and caption logits must be
the checkpoint's own (``InstructBlipVideoForConditionalGeneration``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_models import CAPTIONS, ENCODER

from llm4brain.align.model import BrainAligner
from llm4brain.artifacts import ArtifactError
from llm4brain.models.tokenizer import train_word_tokenizer
from llm4brain.models.video_llm import load_teacher, load_video_qformer
from llm4brain.sections import AlignConfig, EncoderConfig, VideoLlmConfig
from llm4brain.video_llm.checkpoint import checkpoint_settings

PROMPT = "Describe the clip."
QUERIES = 4


def tiny_instructblip_video(directory: Path, video: bool = True) -> None:
    """An InstructBLIP-Video checkpoint directory of random weights, laid out as ``save_pretrained`` and
    ``InstructBlipVideoProcessor.save_pretrained`` leave it (model, LLM tokenizer, ``qformer_tokenizer/``,
    image processor); ``video=False`` saves the image model (``instructblip``) the same way, as
    ``Salesforce/instructblip-vicuna-7b`` is published."""
    import transformers
    from transformers import BertTokenizerFast, BlipImageProcessor, LlamaConfig

    kind = "InstructBlipVideo" if video else "InstructBlip"

    torch.manual_seed(0)
    tokenizer = train_word_tokenizer(CAPTIONS + [PROMPT])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>"]})
    words = sorted({w for text in CAPTIONS + [PROMPT] for w in text.lower().replace(".", " .").split()})
    (directory / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    qformer_tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    (directory / "vocab.txt").unlink()
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    token = {"video_token_index" if video else "image_token_index": tokenizer.convert_tokens_to_ids("<video>")}
    config = getattr(transformers, f"{kind}Config")(
        vision_config={
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "encoder_hidden_size": 24,
            "vocab_size": len(qformer_tokenizer),
            "cross_attention_frequency": 1,
        },
        text_config=text.to_dict(),
        num_query_tokens=QUERIES,
        **token,
    )
    getattr(transformers, f"{kind}ForConditionalGeneration")(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    qformer_tokenizer.save_pretrained(directory / "qformer_tokenizer")
    BlipImageProcessor(size={"height": 16, "width": 16}).save_pretrained(directory)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("instructblipvideo") / "checkpoint"
    tiny_instructblip_video(directory)
    return directory


def teacher_pointer(checkpoint: Path, tmp_path: Path) -> Path:
    """What ``import_video_llm`` writes: results/video_llm/config.json naming the checkpoint."""
    params = VideoLlmConfig(template="{video}{prompt}", prompt=PROMPT, max_caption_tokens=12)
    pointer = tmp_path / "video_llm"
    pointer.mkdir()
    (pointer / "config.json").write_text(json.dumps(checkpoint_settings(checkpoint, params, 4)))
    return pointer


def test_teacher_reproduces_the_checkpoint(checkpoint, tmp_path):
    """Video tokens = ``get_video_features`` of the checkpoint (also from the Q-Former alone, as alignment
    loads it); caption logits = its own forward on the processor's layout (4·Q video tokens, BOS, prompt,
    caption)."""
    from transformers import AutoTokenizer, InstructBlipVideoForConditionalGeneration

    model = InstructBlipVideoForConditionalGeneration.from_pretrained(checkpoint).eval()
    pointer = teacher_pointer(checkpoint, tmp_path)
    qformer, captioner, _ = load_teacher(pointer)
    pixels = torch.randn(2, 4, 3, 16, 16)
    instruction = AutoTokenizer.from_pretrained(checkpoint / "qformer_tokenizer")([PROMPT] * 2, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_video_features(
            pixels, qformer_input_ids=instruction["input_ids"], qformer_attention_mask=instruction["attention_mask"]
        ).pooler_output
        vit = model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state
        tokens = qformer(vit.reshape(2, 4, *vit.shape[1:]))
        assert tokens.shape == (2, 4 * QUERIES, 32)
        torch.testing.assert_close(
            load_video_qformer(pointer)(vit.reshape(2, 4, *vit.shape[1:])), tokens, rtol=0, atol=0
        )
        torch.testing.assert_close(captioner.projection(tokens), expected, rtol=1e-5, atol=1e-5)

        captions = CAPTIONS[:2]
        ids, mask = captioner.encode_captions(captions)
        tokenizer = captioner.tokenizer
        prompt = [tokenizer.bos_token_id] + tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
        video = [model.config.video_token_index] * (4 * QUERIES)
        input_ids = torch.cat([torch.tensor([video + prompt] * 2), ids], dim=1)
        attention = torch.cat([torch.ones(2, len(video + prompt), dtype=torch.long), mask], dim=1)
        logits = model(
            pixel_values=pixels,
            qformer_input_ids=instruction["input_ids"],
            qformer_attention_mask=instruction["attention_mask"],
            input_ids=input_ids,
            attention_mask=attention,
        ).logits
        p = len(video + prompt)
        ours = captioner.caption_logits(tokens, ids, mask)
        keep = mask.bool()
        torch.testing.assert_close(ours[keep], logits[:, p - 1 : p - 1 + ids.shape[1]][keep], rtol=1e-4, atol=1e-4)
    assert len(captioner.generate(tokens, 5)) == 2


def test_image_instructblip_checkpoint_runs_as_the_video_teacher(tmp_path):
    """An image InstructBLIP checkpoint (model_type instructblip, as published) loads as it is: each frame's
    tokens are what the image model gives that frame alone, frames laid out one after the other."""
    from transformers import AutoTokenizer, InstructBlipForConditionalGeneration

    tiny_instructblip_video(tmp_path / "image", video=False)
    assert json.loads((tmp_path / "image" / "config.json").read_text())["model_type"] == "instructblip"
    model = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "image").eval()
    qformer, captioner, _ = load_teacher(teacher_pointer(tmp_path / "image", tmp_path))
    pixels = torch.randn(2 * 4, 3, 16, 16)  # 2 clips of 4 frames
    instruction = AutoTokenizer.from_pretrained(tmp_path / "image" / "qformer_tokenizer")(
        [PROMPT] * 8, return_tensors="pt"
    )
    with torch.no_grad():
        per_frame = model.get_image_features(
            pixels, qformer_input_ids=instruction["input_ids"], qformer_attention_mask=instruction["attention_mask"]
        ).pooler_output
        vit = model.vision_model(pixel_values=pixels).last_hidden_state
        ours = captioner.projection(qformer(vit.reshape(2, 4, *vit.shape[1:])))
    torch.testing.assert_close(ours, per_frame.reshape(2, 4 * QUERIES, -1), rtol=1e-5, atol=1e-5)


def test_aligner_and_adaptors_fit_the_instruction_qformer(checkpoint, tmp_path):
    """The aligner reads fMRI into the checkpoint's Q-Former (adaptors in its layers) and fills all 4 frame
    slots of the video-token layout."""
    qformer, _, _ = load_teacher(teacher_pointer(checkpoint, tmp_path))
    aligner = BrainAligner((8, 8, 4), EncoderConfig.from_dict(ENCODER), AlignConfig(), qformer)
    out = aligner(torch.randn(3, 1, 8, 8, 4))
    assert out.shape == (3, 4 * QUERIES, 32)
    torch.testing.assert_close(out[:, :QUERIES], out[:, QUERIES : 2 * QUERIES])
    trainable = [n for n, p in aligner.qformer.named_parameters() if p.requires_grad]
    assert trainable and all(".adaptor." in n for n in trainable)


QUANTIZED = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantization_leaves_vision_tower_qformer_projection_and_lm_head_in_full_precision(checkpoint, kind):
    """The whole checkpoint as ``load_instructblip_video`` loads it: bitsandbytes layers only inside the
    language model's decoder; its ``lm_head``, the vision tower, the Q-Former and the projection stay
    ``nn.Linear``."""
    from transformers import InstructBlipVideoForConditionalGeneration

    from llm4brain.models.instructblip_video import FULL_PRECISION
    from llm4brain.models.quantization import quantized_loading

    model = InstructBlipVideoForConditionalGeneration.from_pretrained(
        checkpoint, use_safetensors=True, **quantized_loading(kind, "cpu", FULL_PRECISION)
    )
    linear = {name: type(m).__name__ for name, m in model.named_modules() if "Linear" in type(m).__name__}
    quantized = {name for name, layer in linear.items() if layer == QUANTIZED[kind]}
    assert quantized and all(name.startswith("language_model.") and "lm_head" not in name for name in quantized)
    for part in ("vision_model.", "qformer.", "language_projection", "language_model.lm_head"):
        layers = {name: layer for name, layer in linear.items() if name.startswith(part)}
        assert layers and set(layers.values()) == {"Linear"}, part


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantized_student_keeps_qformer_and_projection_in_full_precision(checkpoint, tmp_path, kind, monkeypatch):
    """8-bit or 4-bit NF4 through bitsandbytes quantises the LLM's decoder layers only; a LoRA step runs on
    CPU, after an evaluation pass too on a CPU with AVX512-BF16 (pretended: see
    ``test_instruct.test_a_4bit_student_trains_on_after_evaluation_on_any_cpu``)."""
    import bitsandbytes.nn.modules
    from test_instruct import CAPTIONS, instruct, train

    from llm4brain.instruct.train import build_student

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    student = build_student(str(teacher_pointer(checkpoint, tmp_path)), "", instruct("lora", kind))
    layers = {name: type(m).__name__ for name, m in student.captioner.llm.named_modules()}
    assert QUANTIZED[kind] in layers.values()
    assert [layer for name, layer in layers.items() if name.endswith("lm_head")] == ["Linear"]
    assert type(student.captioner.projection) is torch.nn.Linear
    tokens = torch.randn(3, 4 * QUERIES, 32)
    student.eval()
    with torch.no_grad():
        student.captioner.caption_logits(tokens, *student.captioner.encode_captions(CAPTIONS))
    history = train(student, tokens, steps=2)
    assert history["loss"].notna().all() and (history["grad_norm"] > 0).all()


def test_checkpoint_is_checked_before_use(checkpoint, tmp_path):
    params = VideoLlmConfig()
    with pytest.raises(ArtifactError, match="frames_per_tr: 4"):
        checkpoint_settings(checkpoint, params, 8)
    with pytest.raises(ArtifactError, match="no config.json"):
        checkpoint_settings(tmp_path, params, 4)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ArtifactError, match="model_type 'llama'"):
        checkpoint_settings(tmp_path, params, 4)
