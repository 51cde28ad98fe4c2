"""Uncertainty and significance for caption scores: bootstrap CIs, a paired permutation test, and clip
identification from the decoded text."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Any

import numpy as np

from llm4brain.ranking import topk_accuracy, topk_hits

Tokenized = dict[str, list[str]]

# Metrics whose CI resamples per-clip scores instead of recomputing the corpus score: METEOR runs in Java at
# ~0.4 s per call; ROUGE-L's and CIDEr-D's corpus scores are the means of their per-clip scores. CIDEr-D keeps
# the document frequencies of the whole test set's references: recomputed on a resample, the duplicated clips'
# n-grams look common, their IDF drops, and every resample scores lower (the point estimate fell at the top of
# its own interval). SPICE (a JVM run per call, too) is the mean of its per-clip F-scores.
PER_CLIP_ONLY = ("METEOR", "ROUGE-L", "CIDEr", "SPICE")


def resample(tokens: Tokenized, ids: list[str], pick: np.ndarray) -> Tokenized:
    """A bootstrap copy of a tokenized caption dict: clip ``ids[j]`` for each ``j`` in ``pick``, renamed uniquely."""
    return {f"{k}": tokens[ids[j]] for k, j in enumerate(pick)}


def bootstrap_ci(
    scorers: list[tuple[Any, list[str]]],
    gts: Tokenized,
    res: Tokenized,
    per_clip: dict[str, np.ndarray],
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs over test clips: each resample redraws the clips with replacement and recomputes the
    corpus-level metric (BLEU's brevity penalty included); METEOR, ROUGE-L and CIDEr-D resample per-clip scores."""
    ids = list(gts)
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(ids), size=(n_boot, len(ids)))
    samples: dict[str, list[float]] = {}
    for scorer, names in scorers:
        for pick in picks:
            if names[0] in PER_CLIP_ONLY:
                values = [float(per_clip[names[0]][pick].mean())]
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its statistics
                    value, _ = scorer.compute_score(resample(gts, ids, pick), resample(res, ids, pick))
                values = value if isinstance(value, list) else [value]
            for name, v in zip(names, values, strict=True):
                samples.setdefault(name, []).append(float(v))
    alpha = (1 - level) / 2
    return {name: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) for name, v in samples.items()}


def paired_permutation(a: np.ndarray, b: np.ndarray, n_perm: int, seed: int, strata: np.ndarray | None = None) -> float:
    """One-sided p-value that per-clip scores ``a`` exceed ``b`` (sign-flip test on paired differences).

    ``strata`` (one label per pair, e.g. its replicate) pools several replicates of the same comparison: the
    statistic is the mean over strata of each stratum's mean difference, so every replicate weighs the same
    whatever its number of clips (with equal numbers, the plain mean). Each pair's sign is flipped on its
    own: the clip is the unit, and the trained models are held fixed, so this p says how sure one can be
    of these models' difference, not of training's (:func:`replicate_sign_flip` says that).

    Args:
        a: per-clip scores of the captions tested (e.g. the fMRI captions' CIDEr), one per pair.
        b: the scores they are compared with (shuffled fMRI, an ablated student), paired with ``a`` in order.
        n_perm: random sign patterns drawn (``evaluate.n_permutations``); the smallest p-value is
            ``1 / (n_perm + 1)``.
        seed: seeds the sign patterns, so that a p-value can be reproduced.
        strata: one label per pair (e.g. its replicate's seed), each stratum weighing the same; None = a single stratum.

    Returns:
        The p-value ``(1 + #{null means >= observed}) / (1 + n_perm)``.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    groups = [np.arange(len(d))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(d)))
    null = np.mean([(signs[:, g] * d[g]).mean(1) for g in groups], axis=0)
    observed = np.mean([d[g].mean() for g in groups])
    return float((1 + np.sum(null >= observed)) / (1 + n_perm))


def replicate_sign_flip(differences: np.ndarray) -> float:
    """One-sided p-value that the mean of per-replicate differences (one per trained model pair) exceeds
    zero: the exact sign-flip test over the 2^R sign patterns of the R replicates, the replicate as the unit.
    Its smallest value is 2^-R (five positive replicates: 1/32).

    Args:
        differences: one mean per-clip difference per replicate (e.g. fMRI minus shuffled fMRI CIDEr), 1 to
            20 of them.

    Returns:
        The share of the 2^R sign patterns whose mean is at least the observed one.

    Raises:
        ValueError: no difference, or more than 20 (every one of the 2^R sign patterns is enumerated).
    """
    d = np.asarray(differences, float)
    if not 0 < len(d) <= 20:
        raise ValueError(f"an exact sign flip over {len(d)} replicates: give 1 to 20")
    signs = 1.0 - 2.0 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    null = (signs * d).mean(1)
    return float(np.mean(null >= d.mean() - 1e-12 * np.abs(d).max()))


def per_clip_ci(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of per-clip scores, over the same clip resamples as :func:`bootstrap_ci`."""
    values = np.asarray(values, dtype=float)
    picks = np.random.default_rng(seed).integers(len(values), size=(n_boot, len(values)))
    means = values[picks].mean(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def reference_pool(references: list[list[str]]) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The distinct clips (each a tuple of its references, sorted) and each row's own clip in that pool."""
    pool = sorted({tuple(refs) for refs in references})
    where = {refs: j for j, refs in enumerate(pool)}
    return pool, np.array([where[tuple(refs)] for refs in references])


# n-gram metrics that identify clips: each is cheap per caption x clip pair (METEOR, in Java, is not)
IDENTIFICATION_METRICS = ("CIDEr-D", "BLEU-4", "ROUGE-L")


PAIRS = 50_000  # caption x clip pairs scored at once: memory is bounded by it, not by the test clips squared


def coco_similarity(
    metric: str, candidates: list[str], pool: list[tuple[str, ...]], columns: np.ndarray | None = None
) -> np.ndarray:
    """``metric`` of every (PTB-tokenized) candidate against pool clips' references, ``(n, len(pool))``, or
    against the clips ``columns[i]`` for candidate i, ``(n, columns.shape[1])``: CIDEr-D with the document
    frequencies of all n x m candidate x clip pairs (n times the pool's), sentence-level BLEU-4
    (pycocoevalcap's smoothing), ROUGE-L. A pair scores the same whichever columns are asked for.

    Scored a block of candidates at a time, about ``PAIRS`` pairs each: 1,200 test clips make 1.44 M pairs,
    several GB of pycocoevalcap's n-gram counts at once. CIDEr-D's scorer for a block is given the document
    frequencies and reference count of all the pairs, so every block scores as one scorer of every pair."""
    if metric not in IDENTIFICATION_METRICS:
        raise ValueError(f"caption identification: unknown metric {metric!r} (known: {IDENTIFICATION_METRICS})")
    if columns is None:
        columns = np.broadcast_to(np.arange(len(pool)), (len(candidates), len(pool)))
    rows = max(1, PAIRS // max(1, columns.shape[1]))
    corpus = pair_frequencies(pool, len(candidates)) if metric == "CIDEr-D" else None
    blocks = [
        _similarity(metric, candidates[i : i + rows], pool, columns[i : i + rows], corpus)
        for i in range(0, len(candidates), rows)
    ]
    return np.concatenate(blocks) if blocks else np.zeros((0, columns.shape[1]))


def pair_frequencies(pool: list[tuple[str, ...]], n_candidates: int) -> tuple[defaultdict[Any, float], int]:
    """CIDEr-D's document frequency of each n-gram over the ``n_candidates`` x pool pairs (each pool clip's
    references appear once per candidate), and the number of pairs."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    for refs in pool:
        scorer.cook_append(None, list(refs))
    scorer.compute_doc_freq()
    counts = defaultdict(float, {gram: n_candidates * count for gram, count in scorer.document_frequency.items()})
    return counts, n_candidates * len(pool)


def _similarity(
    metric: str,
    candidates: list[str],
    pool: list[tuple[str, ...]],
    columns: np.ndarray,
    corpus: tuple[defaultdict[Any, float], int] | None,
) -> np.ndarray:
    pairs = [(caption, list(pool[j])) for caption, row in zip(candidates, columns, strict=True) for j in row]
    if metric == "CIDEr-D":
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        assert corpus is not None
        scorer = CiderScorer(n=4, sigma=6.0)
        for caption, refs in pairs:
            scorer.cook_append(caption, refs)
        scorer.document_frequency = corpus[0]
        scorer.crefs += [None] * (corpus[1] - len(pairs))  # scored pairs stop at ctest; log(len(crefs)) is all's
        scores = scorer.compute_cider()  # per pair, in the order appended
    elif metric == "BLEU-4":
        from pycocoevalcap.bleu.bleu import Bleu

        with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its statistics
            _, per_pair = Bleu(4).compute_score(
                {str(k): refs for k, (_, refs) in enumerate(pairs)},
                {str(k): [caption] for k, (caption, _) in enumerate(pairs)},
            )
        scores = per_pair[3]
    else:  # ROUGE-L
        from pycocoevalcap.rouge.rouge import Rouge

        rouge = Rouge()
        scores = [rouge.calc_score([caption], refs) for caption, refs in pairs]
    return np.asarray(scores, dtype=float).reshape(len(candidates), columns.shape[1])


def caption_identification(
    candidates: list[str],
    references: list[list[str]],
    ks: tuple[int, ...] = (1, 5),
    metric: str = "CIDEr-D",
    ways: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Is each decoded caption closest (``metric`` against all of a clip's references) to its own clip among
    all distinct clips? (n-way identification, Horikawa 2025: its own clip against the n - 1 others.)

    A caption that scores the same against several clips is ranked among them at random (in expectation), so
    a caption that matches nothing scores chance, not a hit.

    Args:
        candidates: the decoded captions, PTB-tokenized, one per row.
        references: each row's clip's reference captions, PTB-tokenized; ``candidates[i]`` belongs to the
            clip whose references are ``references[i]``, and rows with the same references are one clip.
        ks: the k of each top-k accuracy.
        metric: ``CIDEr-D`` (with the distinct clips' document frequencies), ``BLEU-4`` (sentence level) or
            ``ROUGE-L``.
        ways: n: each caption against its own clip and ``ways - 1`` others drawn at random for it (linear in
            the captions, not quadratic); ``None`` (or at least the distinct clips), against every clip. Each
            caption x clip pair scores as in the full comparison.
        seed: the draws' seed (caption i draws from ``(seed, i)``).

    Returns:
        ``n_way`` (n, the distinct clips); for each k, ``top{k}`` and its chance ``chance_top{k}``
            (``min(k, n) / n``); ``pairwise`` (2-way accuracy against every other clip, a tie counting one
            half) and its chance ``chance_pairwise`` (0.5).

    Raises:
        ValueError: ``metric`` is not one of ``IDENTIFICATION_METRICS``.
    """
    pool, own = reference_pool(references)
    if ways is None or ways >= len(pool):
        return identification(coco_similarity(metric, candidates, pool), own, ks)
    columns = np.array([drawn_clips(own[i], len(pool), ways, (seed, i)) for i in range(len(candidates))])
    return identification(coco_similarity(metric, candidates, pool, columns), np.zeros(len(candidates), int), ks)


def drawn_clips(own: int, n_clips: int, ways: int, seed: tuple[int, int]) -> np.ndarray:
    """``own`` first, then ``ways - 1`` other clips of ``n_clips`` drawn without replacement."""
    others = np.random.default_rng(seed).choice(n_clips - 1, ways - 1, replace=False)
    return np.concatenate([[own], others + (others >= own)])


def identification(sim: np.ndarray, own_index: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """n-way top-k accuracies with chance (:func:`llm4brain.ranking.topk_accuracy`) and the pairwise (2-way)
    accuracy averaged over every other clip (a tie counts one half; chance 0.5)."""
    sim = np.asarray(sim, dtype=float)
    out = topk_accuracy(sim, own_index, ks)
    rows = np.arange(len(sim))
    others = sim[np.arange(sim.shape[1])[None, :] != np.asarray(own_index)[:, None]].reshape(len(sim), -1)
    out["pairwise"] = float(topk_hits(others[..., None], sim[rows, own_index][:, None], 1).mean())
    out["chance_pairwise"] = 0.5
    return out
