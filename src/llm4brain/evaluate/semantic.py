"""Caption metrics beyond n-gram overlap: BERTScore (``bert-score``) and sentence-embedding cosine similarity
(``sentence-transformers``), each from a local checkpoint named in config. Nothing is downloaded: with no
checkpoint configured a metric is reported ``unavailable``.

Both packages are slow to import and are imported inside the functions that use them. Every metric scores a
caption against each clip of a pool (a tuple of that clip's references): a clip with several references
scores its best one (bert-score's own rule for several references), so one similarity matrix gives each
caption's score (its own clip's column) and its caption identification (all columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llm4brain.evaluate.stats import identification, per_clip_ci, reference_pool
from llm4brain.runtime import LOG, select_device
from llm4brain.sections import EvaluateConfig

Pool = list[tuple[str, ...]]


def _checkpoint(path: str, key: str) -> str:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"config {key}: {path} is not a directory (a local checkpoint is needed)")
    return str(path)


class BertScore:
    """BERTScore precision, recall and F1 (greedy cosine matching of contextual token embeddings, no IDF, no
    baseline rescaling); F1 identifies clips."""

    names = ("BERTScore-P", "BERTScore-R", "BERTScore-F1")
    identify_by = "BERTScore-F1"

    def __init__(self, model: str, *, num_layers: int | None, batch_size: int, device: str) -> None:
        from bert_score import BERTScorer
        from bert_score.utils import model2layers

        model = _checkpoint(model, "evaluate.bertscore.model")
        if num_layers is None:  # the layer bert-score tuned on WMT16 for a model of this name
            name = Path(model).name
            if name not in model2layers:
                raise ValueError(
                    f"config evaluate.bertscore.num_layers: {model} is not a model bert-score knows "
                    f"by name ({name}); say which hidden layer to use"
                )
            num_layers = model2layers[name]
        self.scorer = BERTScorer(
            model_type=model, num_layers=num_layers, batch_size=batch_size, device=device, nthreads=1
        )

    def similarity(self, candidates: list[str], pool: Pool) -> dict[str, np.ndarray]:
        """P, R and F1 of every candidate against every pool clip, each ``(len(candidates), len(pool))``.

        An empty candidate scores 0, bert-score's rule for one (bert-score 0.3.13 cannot encode an empty
        sentence with a transformers 5 tokenizer, so empty ones are not passed to it).
        """
        out = {name: np.zeros((len(candidates), len(pool))) for name in self.names}
        said = [i for i, c in enumerate(candidates) if c.strip()]
        if said:
            cands = [candidates[i] for i in said for _ in pool]
            refs = [list(refs) for _ in said for refs in pool]
            for name, values in zip(self.names, self.scorer.score(cands, refs), strict=True):
                out[name][said] = values.numpy().astype(float).reshape(len(said), len(pool))
        return out


class EmbeddingCosine:
    """Cosine similarity of sentence embeddings (a SentenceTransformer: transformer + pooling)."""

    names = ("embedding-cosine",)
    identify_by = "embedding-cosine"

    def __init__(self, model: str, *, batch_size: int, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        model = _checkpoint(model, "evaluate.sentence_embedding.model")
        self.model = SentenceTransformer(model, device=device, local_files_only=True)
        self.batch_size = batch_size

    def similarity(self, candidates: list[str], pool: Pool) -> dict[str, np.ndarray]:
        """Cosine of every candidate with every pool clip (its best reference), ``(len(candidates), len(pool))``;
        each distinct sentence is embedded once."""
        from sentence_transformers import util

        sentences = list(dict.fromkeys([*candidates, *(ref for refs in pool for ref in refs)]))
        index = {s: i for i, s in enumerate(sentences)}
        embeddings = self.model.encode(
            sentences, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        cos = util.cos_sim(embeddings[[index[c] for c in candidates]], embeddings).cpu().numpy().astype(float)
        sim = np.stack([cos[:, [index[r] for r in refs]].max(1) for refs in pool], axis=1)
        return {"embedding-cosine": sim}


def semantic_metrics(
    evaluate: EvaluateConfig, threads: int = 1
) -> tuple[list[BertScore | EmbeddingCosine], dict[str, str]]:
    """The configured metrics, loaded (torch using ``threads`` CPU threads), and why each of the others is
    unavailable (per column of metrics.tsv).

    Args:
        evaluate: the ``evaluate`` section (``bertscore``, ``sentence_embedding`` and ``device`` are read).
        threads: torch's CPU threads.

    Returns:
        The loaded metrics, and ``column → why it is unavailable`` for the others.
    """
    metrics: list[BertScore | EmbeddingCosine] = []
    unavailable: dict[str, str] = {}
    bert, embedding = evaluate.bertscore, evaluate.sentence_embedding
    if bert.model or embedding.model:
        import torch

        torch.set_num_threads(threads)
        device = str(select_device(evaluate.device))
    if bert.model:
        metrics.append(BertScore(bert.model, num_layers=bert.num_layers, batch_size=bert.batch_size, device=device))
    else:
        unavailable.update(dict.fromkeys(BertScore.names, "unavailable: no evaluate.bertscore.model configured"))
    if embedding.model:
        metrics.append(EmbeddingCosine(embedding.model, batch_size=embedding.batch_size, device=device))
    else:
        unavailable.update(
            dict.fromkeys(EmbeddingCosine.names, "unavailable: no evaluate.sentence_embedding.model configured")
        )
    for name, why in unavailable.items():
        LOG.warning("%s %s", name, why)
    return metrics, unavailable


def semantic_scores(
    metrics: list[BertScore | EmbeddingCosine],
    candidates: list[str],
    references: list[list[str]],
    *,
    n_bootstrap: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """One subject × source: each metric's corpus score (the mean over clips), its bootstrap CI, the caption
    identification by its ``identify_by`` score, and the per-clip scores. ``candidates[i]`` is the caption of the
    clip whose (raw) references are ``references[i]``."""
    pool, own = reference_pool(references)
    rows = np.arange(len(candidates))
    scores: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    ident: dict[str, dict[str, float]] = {}
    per_clip: dict[str, np.ndarray] = {}
    for metric in metrics:
        sims = metric.similarity(candidates, pool)
        for name, sim in sims.items():
            per_clip[name] = sim[rows, own]
            scores[name] = float(per_clip[name].mean())
            ci[name] = per_clip_ci(per_clip[name], n_bootstrap, seed)
        ident[metric.identify_by] = identification(sims[metric.identify_by], own)
    return scores, ci, ident, per_clip
