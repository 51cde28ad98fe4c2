"""``score_captions``: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L and CIDEr per subject × source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llm4brain.artifacts import open_artifact
from llm4brain.runtime import LOG

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SPICE_JAR = "stanford-corenlp-3.6.0.jar"


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
        self.scorers = [(Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]), (Meteor(), ["METEOR"]),
                        (Rouge(), ["ROUGE-L"]), (Cider(), ["CIDEr"])]
        if spice:
            from pycocoevalcap.spice.spice import Spice

            self.scorers.append((Spice(), ["SPICE"]))

    def score(self, references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
        """Corpus-level scores of ``candidates`` (one per id) against ``references`` (a list per id)."""
        gts = self.tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in references.items()})
        res = self.tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in references})
        out: dict[str, float] = {}
        for scorer, names in self.scorers:
            value, _ = scorer.compute_score(gts, res)
            values = value if isinstance(value, list) else [value]
            out.update({name: float(v) for name, v in zip(names, values)})
        return out


def read_decoded(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One subject's decoded captions as a table, with the file's attrs."""
    with open_artifact(path, "eval", ("segment", "tr", "source", "caption", "reference")) as f:
        table = pd.DataFrame({name: f[name].asstr()[:] for name in ("segment", "source", "caption", "reference")})
        table["tr"] = f["tr"][:]
        attrs = dict(f.attrs)
    return table, attrs


def score_captions(eval_paths: list[str], out_path: str | Path, heldout: list[str], params: dict[str, Any]) -> None:
    """Write ``metrics.tsv``: one row per subject × source, with the held-out flag and SPICE status."""
    spice = spice_status()
    if spice:
        LOG.warning("SPICE %s", spice)
    scorer = CocoScorer(spice=not spice)
    rows = []
    for path in eval_paths:
        table, attrs = read_decoded(path)
        subject = str(attrs["subject"])
        for source, group in table.groupby("source", sort=False):
            ids = [f"{s}:{t}" for s, t in zip(group["segment"], group["tr"])]
            references = {i: [r] for i, r in zip(ids, group["reference"])}
            candidates = dict(zip(ids, group["caption"]))
            scores = scorer.score(references, candidates)
            rows.append({"subject": subject, "heldout": subject in heldout, "source": source, "n": len(ids),
                         **scores, **({"SPICE": "unavailable"} if spice else {})})
            LOG.info("%s %-13s CIDEr %.3f BLEU-4 %.3f", subject, source, scores["CIDEr"], scores["BLEU-4"])
    pd.DataFrame(rows).to_csv(out_path, sep="\t", index=False, float_format="%.4f")
