"""``plot_results``: figures for ``snakemake --report`` — scores with CIs, training curves, a caption gallery,
attribute accuracy on the demo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from llm4brain.evaluate.score import read_decoded  # noqa: E402

SOURCE_ORDER = ("fmri", "video-teacher", "shuffled", "nearest-train")


def subject_label(row: pd.Series) -> str:
    """A subject's axis label: held out, and whether test data chose its voxels (``fmri.reliability.split``)."""
    label = f"{row['subject']}\n(held out)" if row["heldout"] else str(row["subject"])
    if row.get("voxel_selection") == "test-reliability":
        label += "\n(test-selected voxels)"
    return label


def plot_scores(metrics_tsvs: dict[int, str | Path], out_png: str | Path, metric: str = "CIDEr") -> None:
    """Grouped bars of ``metric`` per subject × source: each bar the mean over the replicates (seed →
    ``metrics.tsv``), each replicate a point with its 95 % bootstrap CI. A subject held out in some replicates
    and labelled in others (``align.heldout_rotation``) gets a group for each."""
    table = pd.concat(
        [pd.read_csv(path, sep="\t").assign(replicate=seed) for seed, path in metrics_tsvs.items()], ignore_index=True
    )
    for column in (metric, f"{metric}_ci_low", f"{metric}_ci_high"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["group"] = table["subject"].astype(str) + np.where(table["heldout"], " held out", "")
    subjects = list(dict.fromkeys(table["group"]))
    present = list(dict.fromkeys(table["source"]))
    sources = [s for s in SOURCE_ORDER if s in present] + [s for s in present if s not in SOURCE_ORDER]
    replicates = list(metrics_tsvs)
    width = 0.8 / len(sources)
    offsets = (np.arange(len(replicates)) - (len(replicates) - 1) / 2) * width * 0.6 / max(len(replicates), 1)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(subjects), 4.0))
    for i, source in enumerate(sources):
        rows = table[table["source"] == source]
        x = np.arange(len(subjects)) + (i - (len(sources) - 1) / 2) * width
        mean = rows.groupby("group")[metric].mean().reindex(subjects)  # fmri-{ablation}: held out only
        ax.bar(x, mean, width, color=f"C{i}", alpha=0.45, label=source)
        for offset, seed in zip(offsets, replicates, strict=True):
            one = rows[rows["replicate"] == seed].set_index("group").reindex(subjects)
            err = np.vstack([one[metric] - one[f"{metric}_ci_low"], one[f"{metric}_ci_high"] - one[metric]])
            ax.errorbar(x + offset, one[metric], yerr=err, fmt="o", ms=3, lw=0.8, color=f"C{i}", mec="black", mew=0.5)
    labels = [subject_label(table[table["group"] == s].iloc[0]) for s in subjects]
    ax.set_xticks(np.arange(len(subjects)), labels)
    n = len(replicates)
    ax.set_ylabel(f"{metric}: mean of {n} replicate{'s' * (n > 1)} (bars),\neach with its 95 % bootstrap CI (points)")
    ax.legend(
        frameon=False, fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.2)
    )  # below: never on a bar
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_attributes(attributes_tsv: str | Path, out_png: str | Path) -> None:
    """Per subject, the accuracy of each scene attribute in each source's captions, with chance marked."""
    table = pd.read_csv(attributes_tsv, sep="\t")
    subjects = list(dict.fromkeys(table["subject"]))
    attributes = list(dict.fromkeys(table["attribute"]))
    present = list(dict.fromkeys(table["source"]))
    sources = [s for s in SOURCE_ORDER if s in present] + [s for s in present if s not in SOURCE_ORDER]
    width = 0.8 / len(sources)
    x = np.arange(len(attributes))
    fig, axes = plt.subplots(1, len(subjects), figsize=(1.2 + 3.6 * len(subjects), 3.6), sharey=True, squeeze=False)
    for ax, subject in zip(axes[0], subjects, strict=True):
        rows = table[table["subject"] == subject]
        for i, source in enumerate(sources):
            accuracy = rows[rows["source"] == source].set_index("attribute").reindex(attributes)["accuracy"]
            ax.bar(x + (i - (len(sources) - 1) / 2) * width, accuracy, width, label=source, color=f"C{i}")
        chance = rows.drop_duplicates("attribute").set_index("attribute").reindex(attributes)["chance"]
        ax.hlines(
            chance,
            x - 0.45,
            x + 0.45,
            colors="black",
            linestyles="dashed",
            lw=1,
            label="chance" if ax is axes[0, 0] else None,
        )
        heldout = bool(rows["heldout"].iloc[0])
        ax.set_title(f"{subject} (held out)" if heldout else subject, fontsize=9)
        ax.set_xticks(x, attributes, rotation=30, fontsize=8)
        ax.set_ylim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_ylabel("captions naming the true value")
    fig.legend(
        *axes[0, 0].get_legend_handles_labels(),
        frameon=False,
        fontsize=8,
        ncols=min(6, len(sources) + 1),
        loc="lower center",
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_fmri_qc(fmri_paths: list[str | Path], out_png: str | Path) -> None:
    """Per subject: temporal SNR and split-half repeat reliability of the ROI voxels, and how many are kept."""
    import h5py

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for path in fmri_paths:
        with h5py.File(path, "r") as f:
            subject, qc = (
                str(f.attrs["subject"]),
                {name: f["qc"][name][:] for name in ("tsnr", "reliability", "usable")},
            )
        kept = int(qc["usable"].sum())
        label = f"{subject} ({kept}/{len(qc['usable'])} voxels kept)"
        axes[0].hist(qc["tsnr"], bins=40, histtype="step", label=label)
        reliability = qc["reliability"][np.isfinite(qc["reliability"])]
        axes[1].hist(reliability, bins=40, range=(-1, 1), histtype="step", label=subject)
    axes[0].set_xlabel("temporal SNR (raw runs)")
    axes[1].set_xlabel("split-half repeat reliability r (test clips)")
    for ax in axes:
        ax.set_ylabel("voxels")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_training(logs: dict[str, list[str | Path]], out_png: str | Path) -> None:
    """One panel per training rule: total loss and its named terms against the step, every replicate's run
    drawn in the term's colour (the first one labelled).

    ``logs`` maps a rule to each replicate's ``train_log.tsv`` or the model folder that holds one.
    """
    columns = min(3, len(logs))
    rows = -(-len(logs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(logs) :]:
        ax.set_visible(False)
    for ax, (name, paths) in zip(axes.flat, logs.items(), strict=False):
        for run, path in enumerate(map(Path, paths)):
            log = pd.read_csv(path / "train_log.tsv" if path.is_dir() else path, sep="\t")
            terms = [c for c in log.columns if c not in ("step", "grad_norm", "lr")]
            for j, term in enumerate(terms):
                smooth = log[term].rolling(10, min_periods=1).mean()
                width = 1.5 if term == "loss" else 1
                ax.plot(log["step"], smooth, color=f"C{j}", label=term if run == 0 else None, lw=width, alpha=0.7)
        ax.set_title(name if len(paths) == 1 else f"{name}\n({len(paths)} replicates)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def middle_frame(video: str | Path, tr_index: int, tr: float) -> np.ndarray:
    """The frame on screen in the middle of TR window ``tr_index`` (from the stream's timestamps)."""
    import decord

    reader = decord.VideoReader(str(video), num_threads=1)
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    index = int(np.searchsorted(starts, (tr_index + 0.5) * tr, side="right") - 1)
    return reader[index].asnumpy()


def plot_gallery(
    eval_h5: str | Path, stimuli: dict[str, str | Path], tr: float, out_png: str | Path, n_clips: int = 6
) -> None:
    """Middle frames of evenly spaced test clips with reference, fMRI-decoded and teacher captions."""
    table, attrs = read_decoded(eval_h5)
    keys = table[table["source"] == "fmri"][["segment", "tr"]].drop_duplicates().to_records(index=False)
    chosen = [keys[i] for i in np.linspace(0, len(keys) - 1, min(n_clips, len(keys))).astype(int)]
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen), 4.6), squeeze=False)
    for ax, (segment, k) in zip(axes[0], chosen, strict=True):
        ax.imshow(middle_frame(stimuli[segment], int(k), tr))
        ax.set_axis_off()
        ax.set_title(f"{segment}, TR {k}", fontsize=8)
        rows = table[(table["segment"] == segment) & (table["tr"] == k)].set_index("source")
        lines = [
            "reference: " + rows["reference"].iloc[0],
            "fMRI: " + rows.loc["fmri", "caption"],
            "video: " + rows.loc["video-teacher", "caption"],
        ]
        ax.text(
            0.0,
            -0.04,
            "\n".join(textwrap.fill(line, 30) for line in lines),
            transform=ax.transAxes,
            fontsize=7,
            va="top",
            ha="left",
        )
    fig.suptitle(f"{attrs['subject']}: decoded test clips", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.38, wspace=0.08)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
