"""Draw the pipeline figure of the README and the docs (docs/images/pipeline.svg): what flows from which
inputs through which stages. Run ``.venv/bin/python tools/pipeline_figure.py`` after changing the stages;
the SVG is deterministic (no date, fixed ids), so an unchanged figure gives an unchanged file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "pipeline.svg"
INPUT, STAGE, RESULT = "#eef2f7", "#dbe9f6", "#e3f1df"

COLUMNS, ROWS = (1.3, 4.2, 7.1, 10.0, 12.9), (3.0, 1.8, 0.5)
WIDTH, HEIGHT = 2.55, 0.85
# name: (column, row, text, colour)
BOXES = {
    "bold": (0, 0, "fMRI runs\nBIDS / fMRIPrep / Wen 2018", INPUT),
    "video": (0, 1, "stimulus videos\n{segment}.mp4", INPUT),
    "captions": (0, 2, "captions TSV\n(segment, tr, caption)", INPUT),
    "fmri": (1, 0, "preprocess_fmri\nmask, detrend, z-score", STAGE),
    "features": (1, 1, "extract_frames,\ncache_features: ViT tokens", STAGE),
    "scmbm": (2, 0, "pretrain_scmbm\nmasked brain modelling", STAGE),
    "teacher": (2, 1, "video teacher\nQ-Former + LLM", STAGE),
    "align": (3, 0, "pretrain_adaptor\nfMRI ↔ video tokens,\ndomain adaptation", STAGE),
    "instruct": (3, 1, "instruct_llm\nfMRI student: captions\n+ distillation", STAGE),
    "eval": (4, 1, "decode + score\nmetrics.tsv, tests.tsv,\nreport.html", RESULT),
}
# (from, to, route): "row" = side to side, "down" = bottom to top, "bus" = along the bottom row, then up
ARROWS = [
    ("bold", "fmri", "row"),
    ("fmri", "scmbm", "row"),
    ("scmbm", "align", "row"),
    ("video", "features", "row"),
    ("features", "teacher", "row"),
    ("features", "align", "row"),
    ("teacher", "align", "row"),
    ("teacher", "instruct", "row"),
    ("align", "instruct", "down"),
    ("instruct", "eval", "row"),
    ("captions", "teacher", "bus"),
    ("captions", "instruct", "bus"),
    ("captions", "eval", "bus"),
]


def centre(name: str) -> tuple[float, float]:
    column, row, *_ = BOXES[name]
    return COLUMNS[column], ROWS[row]


def arrow(start: str, end: str, route: str) -> FancyArrowPatch:
    (x0, y0), (x1, y1) = centre(start), centre(end)
    style = {"arrowstyle": "-|>", "mutation_scale": 11, "color": "#4a6785", "linewidth": 1, "shrinkA": 1, "shrinkB": 2}
    if route == "down":
        return FancyArrowPatch((x0, y0 - HEIGHT / 2), (x1, y1 + HEIGHT / 2), **style)
    if route == "bus":
        return FancyArrowPatch(
            (x0 + WIDTH / 2, y0), (x1, y1 - HEIGHT / 2), connectionstyle="angle,angleA=0,angleB=90,rad=0", **style
        )
    return FancyArrowPatch((x0 + WIDTH / 2, y0), (x1 - WIDTH / 2, y1), **style)


def draw(out: Path = OUT) -> Path:
    plt.rcParams.update({"svg.hashsalt": "llm4brain", "svg.fonttype": "none", "font.size": 8.5})
    fig, ax = plt.subplots(figsize=(12, 3.5))
    ax.set_xlim(-0.2, 14.4)
    ax.set_ylim(0.0, 3.7)
    ax.axis("off")
    for name, (_, _, text, colour) in BOXES.items():
        x, y = centre(name)
        ax.add_patch(
            FancyBboxPatch(
                (x - WIDTH / 2, y - HEIGHT / 2),
                WIDTH,
                HEIGHT,
                boxstyle="round,pad=0.04",
                facecolor=colour,
                edgecolor="#4a6785",
                linewidth=1,
            )
        )
        ax.text(x, y, text, ha="center", va="center", linespacing=1.25)
    for start, end, route in ARROWS:
        ax.add_patch(arrow(start, end, route))
    ax.text(
        7.0,
        3.6,
        "each arrow is an artifact on disk (HDF5 or safetensors); every TR-level row carries the "
        "join key (segment, tr)",
        ha="center",
        va="center",
        style="italic",
        color="#4a6785",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw())
