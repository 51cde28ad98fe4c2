"""``score_captions``: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L and CIDEr, and BERTScore and sentence-embedding
cosine when local checkpoints are configured, per subject × source, with CIs and caption identification."""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import pandas as pd

from llm4brain.artifacts import open_artifact, read_references
from llm4brain.evaluate.semantic import semantic_metrics, semantic_scores
from llm4brain.evaluate.stats import IDENTIFICATION_METRICS, bootstrap_ci, caption_identification, paired_permutation
from llm4brain.runtime import LOG
from llm4brain.sections import EvaluateConfig

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SPICE_JAR = "stanford-corenlp-3.6.0.jar"
# a group's scores, their CIs, caption identification and per-clip scores (score_group, semantic_scores)
GroupScores: TypeAlias = tuple[
    dict[str, float], dict[str, tuple[float, float]], dict[str, dict[str, float]], dict[str, np.ndarray]
]


def spice_status() -> str:
    """Why SPICE cannot run here (it downloads Stanford CoreNLP at first use), or '' when it can."""
    from pycocoevalcap import spice

    lib = Path(spice.__file__).parent / "lib"
    if not (lib / SPICE_JAR).exists():
        return f"unavailable: {SPICE_JAR} is not in {lib} and SPICE would download it (offline machine)"
    return ""


class CocoScorer:
    """The COCO caption metrics with one METEOR (Java) process reused across calls."""

    def __init__(self, spice: bool = False) -> None:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        self.tokenizer = PTBTokenizer()
        self.scorers = [
            (Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]),
            (Meteor(), ["METEOR"]),
            (Rouge(), ["ROUGE-L"]),
            (Cider(), ["CIDEr"]),
        ]
        if spice:
            from pycocoevalcap.spice.spice import Spice

            self.scorers.append((Spice(), ["SPICE"]))

    def tokenize(self, references: dict[str, list[str]], candidates: dict[str, str]) -> tuple[dict, dict]:
        """PTB-tokenize references (a list per id) and candidates (one per id), once for every metric."""
        with contextlib.redirect_stdout(io.StringIO()):
            gts = self.tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in references.items()})
            res = self.tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in references})
        return gts, res

    def compute(self, gts: dict, res: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Corpus-level scores and per-clip scores (in ``gts`` order) of tokenized captions."""
        scores: dict[str, float] = {}
        per_clip: dict[str, np.ndarray] = {}
        for scorer, names in self.scorers:
            with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its statistics
                value, clip_values = scorer.compute_score(gts, res)
            values = value if isinstance(value, list) else [value]
            clip_values = clip_values if isinstance(value, list) else [clip_values]
            for name, v, per in zip(names, values, clip_values, strict=True):
                if name == "SPICE":  # per clip, a dict of F/precision/recall per semantic category
                    per = [clip["All"]["f"] for clip in per]
                scores[name] = float(v)
                per_clip[name] = np.asarray(per, dtype=float)
        return scores, per_clip

    def score(self, references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
        """Corpus-level scores of ``candidates`` (one per id) against ``references`` (a list per id)."""
        return self.compute(*self.tokenize(references, candidates))[0]


def read_decoded(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One subject's decoded captions as a table, with the file's attrs."""
    with open_artifact(path, "eval", ("segment", "tr", "source", "caption", "reference")) as f:
        table = pd.DataFrame({name: f[name].asstr()[:] for name in ("segment", "source", "caption", "reference")})
        table["tr"] = f["tr"][:]
        attrs = dict(f.attrs)
    return table, attrs


_WORKER: dict[str, Any] = {}


def _start_worker(spice: bool) -> None:
    """One scorer (and METEOR's Java process) per worker process, reused for every group it scores."""
    _WORKER["scorer"] = CocoScorer(spice=spice)


def score_group(
    references: dict[str, list[str]], candidates: dict[str, str], n_bootstrap: int, seed: int, ways: int | None
) -> GroupScores:
    """One subject × source: corpus scores, their bootstrap CIs, caption identification by each of
    :data:`IDENTIFICATION_METRICS` (``ways``-way, or against every clip) and per-clip CIDEr (in ``references``
    order)."""
    scorer = _WORKER["scorer"]
    gts, res = scorer.tokenize(references, candidates)
    scores, per_clip = scorer.compute(gts, res)
    ci = bootstrap_ci(scorer.scorers, gts, res, per_clip, n_bootstrap, seed)
    ids = list(references)
    identification = {
        metric: caption_identification(
            [res[i][0] for i in ids], [gts[i] for i in ids], metric=metric, ways=ways, seed=seed
        )
        for metric in IDENTIFICATION_METRICS
    }
    return scores, ci, identification, {"CIDEr": per_clip["CIDEr"]}


def score_captions(
    *,
    eval_paths: list[str],
    captions_path: str | Path,
    out_path: str | Path,
    identification_path: str | Path,
    tests_path: str | Path,
    ablation_path: str | Path,
    heldout: list[str],
    evaluate: EvaluateConfig,
    seed: int,
    workers: int = 1,
    per_clip_path: str | Path | None = None,
) -> None:
    """Write ``metrics.tsv`` (one row per subject × source, with 95 % bootstrap CIs; a metric that cannot run
    here says ``unavailable``), ``identification.tsv`` (clip identification from the decoded text, a row per
    subject × source × metric), ``tests.tsv`` (fMRI vs shuffled fMRI and vs each ablated student, paired, by
    CIDEr and by each semantic metric that runs) and ``ablation.tsv`` (see :func:`ablation_table`); with
    ``per_clip_path``, the tested metrics' per-clip scores (subject, source, segment, tr: the pairs that
    :mod:`llm4brain.evaluate.summary` pools over replicates). Every
    reference of a clip in ``captions_path`` counts (several annotators or captioners). The subject × source
    groups are scored in ``workers`` processes (the bootstrap dominates); the results do not depend on how
    many. BERTScore and embedding cosine (:mod:`llm4brain.evaluate.semantic`) run in this process.

    Args:
        eval_paths: each subject's decoded captions (``results/r{seed}/eval/{subject}.h5``: sources ``fmri``,
            ``video-teacher``, ``shuffled`` and ``nearest-train``) and its ablated students' files (sources
            ``fmri-{ablation}``).
        captions_path: the reference captions artifact (``results/text/captions.h5``).
        out_path: ``metrics.tsv``, to write.
        identification_path: ``identification.tsv``, to write.
        tests_path: ``tests.tsv``, to write.
        ablation_path: ``ablation.tsv``, to write.
        heldout: the replicate's held-out subjects (``align.heldout``, or its turn under rotation), flagged in
            every table's ``heldout`` column.
        evaluate: the ``evaluate`` config section, with ``bertscore.model`` and ``sentence_embedding.model``
            resolved to local checkpoint directories (or null: the metric is ``unavailable``); reads
            ``n_bootstrap``, ``n_permutations``, ``identification_ways`` and ``device`` too.
        seed: seeds the bootstrap resamples and the sign flips (the replicate's seed).
        workers: processes that score the subject × source groups, and torch's CPU threads for the semantic
            metrics.
        per_clip_path: ``per_clip.tsv``, to write; None = not written.

    Raises:
        ArtifactError: a decoded file or the captions artifact is missing, of the wrong schema or empty.
    """
    references = read_references(captions_path)
    spice = spice_status()
    if spice:
        LOG.warning("SPICE %s", spice)
    semantic, unavailable = semantic_metrics(evaluate, workers)
    tables: dict[str, list[pd.DataFrame]] = {}
    selection: dict[str, str] = {}  # what chose each subject's voxels: test-reliability marks test-selected ones
    for path in eval_paths:  # a subject's main file, and the ablated students' files
        table, attrs = read_decoded(path)
        tables.setdefault(str(attrs["subject"]), []).append(table)
        selection[str(attrs["subject"])] = str(attrs.get("voxel_selection", "unknown"))
    groups = []
    for subject, parts in tables.items():
        table = pd.concat(parts, ignore_index=True)
        for source, group in table.groupby("source", sort=False):
            ids = [f"{s}:{t}" for s, t in zip(group["segment"], group["tr"], strict=True)]
            refs = {i: references[(s, int(t))] for i, s, t in zip(ids, group["segment"], group["tr"], strict=True)}
            groups.append((subject, source, refs, dict(zip(ids, group["caption"], strict=True))))
    # the video teacher captions the same test clips for every subject: each distinct group is scored once
    # (with the same bootstrap seed, a copy would get exactly the same numbers)
    signatures = [repr((sorted(refs.items()), sorted(candidates.items()))) for _, _, refs, candidates in groups]
    first: dict[str, int] = {}  # each distinct group's first index
    for i, signature in enumerate(signatures):
        first.setdefault(signature, i)
    ways = evaluate.identification_ways
    jobs = [(groups[i][2], groups[i][3], evaluate.n_bootstrap, seed, ways) for i in first.values()]
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(not spice,)) as pool:
            scored = dict(zip(first, pool.map(score_group, *zip(*jobs, strict=True)), strict=True))
    else:
        _start_worker(not spice)
        scored = {signature: score_group(*job) for signature, job in zip(first, jobs, strict=True)}
    for signature, i in first.items():  # semantic metrics: one model in this process, each distinct group once
        refs, candidates = groups[i][2], groups[i][3]
        ids = list(refs)
        semantic_part = semantic_scores(
            semantic, [candidates[k] for k in ids], [refs[k] for k in ids], n_bootstrap=evaluate.n_bootstrap, seed=seed
        )
        scored[signature] = merge(scored[signature], semantic_part)
    results = [scored[signature] for signature in signatures]
    rows, identification, tests = [], [], []
    paired: dict[str, dict[str, dict[str, dict[str, float]]]] = {}  # subject -> source -> metric -> clip -> score
    for (subject, source, refs, _), (scores, ci, ident, per_clip) in zip(groups, results, strict=True):
        flags = {"subject": subject, "heldout": subject in heldout, "voxel_selection": selection[subject]}
        bounds = {f"{name}_{end}": ci[name][j] for name in scores for j, end in enumerate(("ci_low", "ci_high"))}
        rows.append(
            {
                **flags,
                "source": source,
                "n": len(refs),
                **scores,
                **({"SPICE": "unavailable"} if spice else {}),
                **dict.fromkeys(unavailable, "unavailable"),
                **bounds,
            }
        )
        identification += [{**flags, "source": source, "metric": metric, **values} for metric, values in ident.items()]
        paired.setdefault(subject, {})[source] = {
            name: dict(zip(refs, values, strict=True)) for name, values in per_clip.items()
        }
        LOG.info("%s %-13s CIDEr %.3f [%.3f, %.3f]", subject, source, scores["CIDEr"], *ci["CIDEr"])
    tested = ["CIDEr"] + [metric.identify_by for metric in semantic]
    for subject, by_source in paired.items():
        flags = {"subject": subject, "heldout": subject in heldout, "voxel_selection": selection[subject]}
        others = ["shuffled"] + [s for s in by_source if s.startswith("fmri-")]
        for other in [s for s in others if "fmri" in by_source and s in by_source]:
            for metric in tested:
                ids = sorted(by_source["fmri"][metric])
                a = np.array([by_source["fmri"][metric][i] for i in ids])
                b = np.array([by_source[other][metric][i] for i in ids])
                tests.append(
                    {
                        **flags,
                        "comparison": f"fmri > {other}",
                        "metric": metric,
                        "n": len(ids),
                        "mean_difference": float(np.mean(a - b)),
                        "p_value": paired_permutation(a, b, evaluate.n_permutations, seed),
                    }
                )
    metrics, tests = pd.DataFrame(rows), pd.DataFrame(tests)
    if per_clip_path is not None:
        per_clip_table(paired, heldout).to_csv(per_clip_path, sep="\t", index=False, float_format="%.6g")
    metrics.to_csv(out_path, sep="\t", index=False, float_format="%.4f")
    pd.DataFrame(identification).to_csv(identification_path, sep="\t", index=False, float_format="%.4f")
    tests.to_csv(tests_path, sep="\t", index=False, float_format="%.4g")
    ablation_table(metrics, tests).to_csv(ablation_path, sep="\t", index=False, float_format="%.4g")


def per_clip_table(paired: dict[str, dict[str, dict[str, dict[str, float]]]], heldout: list[str]) -> pd.DataFrame:
    """``subject → source → metric → clip id (segment:tr) → score`` as one row per subject × source × clip."""
    rows = [
        {"subject": subject, "heldout": subject in heldout, "source": source, "clip": clip, metric: score}
        for subject, by_source in paired.items()
        for source, by_metric in by_source.items()
        for metric, scores in by_metric.items()
        for clip, score in scores.items()
    ]
    table = pd.DataFrame(rows).groupby(["subject", "heldout", "source", "clip"], sort=False).first().reset_index()
    clip = table.pop("clip").str.rsplit(":", n=1, expand=True)
    table.insert(3, "segment", clip[0])
    table.insert(4, "tr", clip[1].astype(int))
    return table


def merge(*parts: GroupScores) -> GroupScores:
    """Scores, CIs, identification and per-clip scores of several scorers of one group, as one."""
    return cast(
        GroupScores,
        tuple({key: value for part in parts for key, value in part[j].items()} for j in range(len(parts[0]))),
    )


def ablation_table(metrics: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """fMRI captions of the full model next to each ablated student's (sources ``fmri-{ablation}``), per
    subject: CIDEr with its CI, METEOR, and the paired test of full > ablation."""
    fmri = metrics[metrics["source"].str.startswith("fmri")].copy()
    fmri.insert(0, "model", fmri.pop("source").str.removeprefix("fmri").str.removeprefix("-").replace("", "full"))
    fmri = fmri[["model", "subject", "heldout", "n", "CIDEr", "CIDEr_ci_low", "CIDEr_ci_high", "METEOR"]]
    if tests.empty:
        return fmri.assign(cider_gain_of_full=np.nan, p_value=np.nan)
    paired = tests[tests["comparison"].str.startswith("fmri > fmri-") & (tests["metric"] == "CIDEr")]
    paired = paired.assign(model=paired["comparison"].str.removeprefix("fmri > fmri-"))
    paired = paired.rename(columns={"mean_difference": "cider_gain_of_full"})[
        ["model", "subject", "cider_gain_of_full", "p_value"]
    ]
    return fmri.merge(paired, on=["model", "subject"], how="left").sort_values(["subject", "model"], kind="stable")
