"""Cross-subject decoding where it is hard: for each simulator regime (``demo.regime``) × replicate × held-out
subject (every subject in turn) × domain-adaptation method, the held-out subject's clip identification after
alignment, between a floor (no adaptation) and a ceiling (the same aligner trained with that subject's own
labels, for evaluation only), as the recovered share of the gap.

    .venv/bin/python benchmarks/cross_subject.py --regimes shared-linear idiosyncratic --replicates 0 1 2

The measure is latent identification from ``pretrain_adaptor``'s ``metrics.tsv``: 50-way top-1 and top-5
(chance 0.02 and 0.10) of the held-out subject's test fMRI tokens against the test clips' video tokens
(MinD-Vis' protocol; top-5 is the less noisy on 60 test clips), not caption scores: it needs the aligner
alone, so the table costs minutes per configuration rather than a whole demo.
Each regime × replicate runs in its own copy of the workflow (seed = the replicate), whose data, fMRI,
features, teacher and SC-MBM encoder every method shares; only ``pretrain_adaptor`` (and, for SRM, the
functional alignment) reruns per configuration. Prints, per regime × method, the recovered share
(adapted - floor) / (ceiling - floor) of each replicate's means over its held-out subjects, averaged over
replicates, with its 95 % t interval over replicates and its range, and the exact one-sided sign-flip p
over replicates that the method beats the floor (a trained model is the unit). Writes every number to
``--out`` (TSV); ``--summarize`` reads such tables back, merging separate runs only where the floors and
ceilings they share agree to the last digit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from dag import REPO, copy_workflow
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from llm4brain.evaluate.stats import replicate_sign_flip  # noqa: E402

SUBJECTS = ("sub-01", "sub-02", "sub-03")
# the simulator's regimes (demo.regime), and disjoint: idiosyncratic subjects, the held-out one shown other
# training clips than the labelled ones (data.segments.subject_train), where SRM cannot be fitted
REGIMES = ("shared-linear", "idiosyncratic", "disjoint")
OFF = {"domain": 0.0, "target_mbm": 0.0, "adversarial": 0.0}
# what each method changes in the align section; every method starts from "none" (no adaptation at all)
METHODS: dict[str, dict] = {
    "none": {"loss": OFF, "functional_alignment": {"method": "none"}},
    "mmd": {"loss": {**OFF, "domain": 0.5}, "domain_method": "mmd", "functional_alignment": {"method": "none"}},
    "coral": {"loss": {**OFF, "domain": 0.5}, "domain_method": "coral", "functional_alignment": {"method": "none"}},
    "target_mbm": {"loss": {**OFF, "target_mbm": 0.5}, "functional_alignment": {"method": "none"}},
    "adversarial": {"loss": {**OFF, "adversarial": 0.1}, "functional_alignment": {"method": "none"}},
    # every self-supervised loss term at once, the domain term as CORAL
    "combined": {
        "loss": {"domain": 0.5, "target_mbm": 0.5, "adversarial": 0.1},
        "domain_method": "coral",
        "functional_alignment": {"method": "none"},
    },
    "srm": {"loss": OFF, "functional_alignment": {"method": "srm"}},
    # fitted on each voxel's connectivity, not on shared clips: it applies in disjoint too
    "connectivity-srm": {"loss": OFF, "functional_alignment": {"method": "connectivity-srm"}},
    # the symmetric comparison: every subject through the shared space, the labelled ones too
    "srm-all": {"loss": OFF, "functional_alignment": {"method": "srm", "carry": "all"}},
}
# what the ceiling (the held-out subject's own labels used) adds for a method whose inputs differ from the
# floor's: srm-all reads every subject through the shared space, and so does its ceiling
CEILINGS = {"srm-all": "ceiling-srm-all"}


def method_config(method: str) -> dict:
    """What ``method`` changes in the align section: ``METHODS[name]``, or for ``name@w`` that method with
    each loss term it switches on at weight ``w`` (``adversarial@0.3``, ``combined@1``)."""
    name, _, weight = method.partition("@")
    if name not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {sorted(METHODS)}, optionally @weight")
    config = dict(METHODS[name])
    if weight:
        terms = {term: float(weight) if on else 0.0 for term, on in config["loss"].items()}
        if not any(terms.values()):
            raise ValueError(f"{method!r}: {name} switches on no loss term to weigh")
        config["loss"] = terms
    return config


SRM = ("srm", "srm-all")
MEASURES = ("top1", "top5")  # of metrics.tsv's 50-way rows
SUMMARY = "top5"


# what every run of a table adds to the align section (--subject-kernel); empty: the demo config's
ALIGN: dict = {}


def run(workdir: Path, seed: int, data: dict, align: dict, cores: int) -> pd.DataFrame:
    """``pretrain_adaptor``'s metrics for one configuration (the rest of the DAG reused when unchanged)."""
    overlay = {"seed": seed, **data, "align": {"ablations": [], **ALIGN, **align}}
    path = workdir / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    target = f"results/r{seed}/align/metrics.tsv"
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet", "--configfile", "config/config.yaml"]
        + [str(path), "--", target],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(workdir / "src")},  # the copied package, not the editable install
    )
    if done.returncode:
        raise RuntimeError(f"snakemake failed on {overlay}:\n{done.stderr[-4000:]}")
    metrics = pd.read_csv(workdir / target, sep="\t")
    return metrics[(metrics["n_way"] == 50) & (metrics["split"] == "test")].set_index("subject")


def demo_segments() -> dict:
    """``data.segments`` of the demo's config (``config/config.yaml``), which every task here starts from."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["segments"]


def data_overlays(regime: str) -> dict[str, dict]:
    """Per held-out subject, the ``demo`` and ``data`` config it is measured on. In ``disjoint`` the held-out
    subject watched as many training segments as the labelled ones, but others (data.segments.subject_train),
    with idiosyncratic subjects; its data, and so its ceiling, is its own."""
    if regime != "disjoint":
        overlay = {"demo": {"regime": regime}}
        return dict.fromkeys(SUBJECTS, overlay)
    segments = demo_segments()
    own = [f"own{i + 1:02d}" for i in range(len(segments["train"]))]
    return {
        subject: {
            "demo": {"regime": "idiosyncratic"},
            "data": {"segments": {**segments, "subject_train": {subject: own}}},
        }
        for subject in SUBJECTS
    }


def measure(
    regimes: list[str], replicates: list[int], methods: list[str], cores: int, out: Path, heldout: list[str]
) -> pd.DataFrame:
    """Every configuration's row; ``out`` is rewritten after each, so a stopped run leaves what it measured."""
    rows: list[dict] = []
    for regime in regimes:
        # SRM needs the held-out subject's responses to the labelled subjects' training clips
        usable = [m for m in methods if not (regime == "disjoint" and m.partition("@")[0] in SRM)]
        overlays = data_overlays(regime)
        for seed in replicates:
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                copy_workflow(workdir)
                started = time.perf_counter()
                ceilings: dict[tuple[str, str], pd.DataFrame] = {}
                for subject in heldout:
                    data = overlays[subject]
                    # in disjoint the subject shares no training clip with the others: its ceiling is trained
                    # on its own labels alone (its data is its own); elsewhere every subject is labelled and
                    # one ceiling run serves every held-out subject
                    unlabelled = [s for s in SUBJECTS if s != subject] if regime == "disjoint" else []
                    key = {"regime": regime, "replicate": seed, "heldout": subject}
                    for name, method in [("ceiling", "none")] + [(CEILINGS[m], m) for m in usable if m in CEILINGS]:
                        if (name, str(unlabelled)) not in ceilings:
                            align = {"heldout": unlabelled, **method_config(method)}
                            ceilings[name, str(unlabelled)] = run(workdir, seed, data, align, cores)
                        ceiling = ceilings[name, str(unlabelled)]
                        rows.append({**key, "method": name, **ceiling.loc[subject, list(MEASURES)].to_dict()})
                    ceiling = ceilings["ceiling", str(unlabelled)]
                    for method in usable:
                        metrics = run(workdir, seed, data, {"heldout": [subject], **method_config(method)}, cores)
                        rows.append({**key, "method": method, **metrics.loc[subject, list(MEASURES)].to_dict()})
                        others = metrics.drop(index=subject)  # the labelled subjects of the same run
                        rows[-1].update({f"labelled_{m}": float(others[m].mean()) for m in MEASURES})
                        labelled = rows[-1][f"labelled_{SUMMARY}"]
                        print(
                            f"{regime} r{seed} {subject} {method:12s} {SUMMARY} {rows[-1][SUMMARY]:.3f} "
                            f"(ceiling {ceiling.loc[subject, SUMMARY]:.3f}, labelled {labelled:.3f})",
                            flush=True,
                        )
                        pd.DataFrame(rows).to_csv(out, sep="\t", index=False)
                print(f"{regime} r{seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return pd.DataFrame(rows)


# --select: the self-supervised methods' weights chosen on training segments alone, in the disjoint regime's
# setting without its held-out subject or test segment. Two subjects: the first watched the first half of the
# training segments but the last, the second (data.segments.subject_train) the rest but the last, and the last
# training segment is the pseudo-test. Each is the pseudo-target in turn: held out (its labels unused), scored
# on the pseudo-test with its labels. Its ceiling is the run holding out the other, trained on its own labels
# alone, so two runs without adaptation give both floors and both ceilings.
SELECTION = SUBJECTS[:2]


def selection_overlay() -> dict:
    """The ``demo`` and ``data`` config of the selection task, from ``config/config.yaml``'s training segments
    (idiosyncratic subjects, as in disjoint)."""
    train = demo_segments()["train"]
    half = (len(train) + 1) // 2  # six training segments: 3 for the first subject, 2 for the second, 1 to test
    segments = {"train": train[:half], "test": train[-1:], "subject_train": {SELECTION[1]: train[half:-1]}}
    return {"demo": {"regime": "idiosyncratic"}, "data": {"subjects": list(SELECTION), "segments": segments}}


def select(replicates: list[int], methods: list[str], cores: int, out: Path) -> pd.DataFrame:
    """Every selection run's row (regime ``selection``, the pseudo-target as ``heldout``, the two runs without
    adaptation as ``none`` and ``ceiling``); ``out`` is rewritten after each."""
    rows: list[dict] = []
    data = selection_overlay()
    for seed in replicates:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            copy_workflow(workdir)
            started = time.perf_counter()
            unadapted = {
                held: run(workdir, seed, data, {"heldout": [held], **METHODS["none"]}, cores) for held in SELECTION
            }
            for pseudo, labelled in (SELECTION, SELECTION[::-1]):
                key = {"regime": "selection", "replicate": seed, "heldout": pseudo}
                for method, metrics in (("none", unadapted[pseudo]), ("ceiling", unadapted[labelled])):
                    rows.append({**key, "method": method, **metrics.loc[pseudo, list(MEASURES)].to_dict()})
                for method in methods:
                    metrics = run(workdir, seed, data, {"heldout": [pseudo], **method_config(method)}, cores)
                    rows.append({**key, "method": method, **metrics.loc[pseudo, list(MEASURES)].to_dict()})
                    print(f"selection r{seed} {pseudo} {method:16s} {SUMMARY} {rows[-1][SUMMARY]:.3f}", flush=True)
                    pd.DataFrame(rows).to_csv(out, sep="\t", index=False)
            print(f"selection r{seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return pd.DataFrame(rows)


KEY = ["regime", "replicate", "heldout", "method"]


def merged(paths: list[Path]) -> pd.DataFrame:
    """The rows of tables written before, one per configuration. Tables of separate runs may share rows (each
    run measures its own floor and ceiling): a shared row must hold the same values in every table, to the
    last digit, or the runs measured different things (another commit's stimuli, another config) and their
    shares cannot be put side by side; that is an error naming both tables."""
    tables = [pd.read_csv(path, sep="\t").assign(_table=str(path)) for path in paths]
    table = pd.concat(tables, ignore_index=True)
    values = [m for m in [*MEASURES, *(f"labelled_{m}" for m in MEASURES)] if m in table]
    for key, rows in table.groupby(KEY, sort=False):
        for column in values:
            seen = rows.dropna(subset=[column]).drop_duplicates(column)
            if len(seen) > 1:
                (first, second), (a, b) = seen["_table"].iloc[:2], seen[column].iloc[:2]
                raise SystemExit(
                    f"{dict(zip(KEY, key, strict=True))}: {column} is {a} in {first} but {b} in {second}: "
                    "the runs did not measure the same configuration"
                )
    return table.drop_duplicates(KEY).drop(columns="_table").reset_index(drop=True)


def recovered(table: pd.DataFrame, measure: str = SUMMARY) -> pd.DataFrame:
    """Per regime × method: the recovered share of the floor-to-ceiling gap and the replicate-level test.
    A replicate's share is (adapted - floor) / (ceiling - floor) of its means over the held-out subjects
    (a ratio of per-subject differences would blow up where one subject's gap is near zero)."""
    wide = table.pivot_table(index=["regime", "replicate", "heldout"], columns="method", values=measure)
    means = wide.groupby(level=["regime", "replicate"]).mean()
    out = []
    for method in [m for m in wide.columns if not m.startswith("ceiling") and m != "none"]:
        ceiling = CEILINGS.get(method, "ceiling")
        for regime, part in means.groupby(level="regime"):
            if part[method].isna().all():  # not measured in this regime (SRM in disjoint)
                continue
            gain = part[method] - part["none"]
            share = gain / (part[ceiling] - part["none"])
            # 95 % t interval of the mean share over replicates (a trained model is the unit)
            half = stats.t.ppf(0.975, len(share) - 1) * share.std(ddof=1) / np.sqrt(len(share))
            out.append(
                {
                    "regime": regime,
                    "method": method,
                    "measure": measure,
                    "recovered_share": float(share.mean()),
                    "ci_low": float(share.mean() - half),
                    "ci_high": float(share.mean() + half),
                    "replicate_min": float(share.min()),
                    "replicate_max": float(share.max()),
                    "floor": float(part["none"].mean()),
                    "adapted": float(part[method].mean()),
                    "ceiling": float(part[ceiling].mean()),
                    "n_replicates": len(part),
                    "p_replicates": replicate_sign_flip(gain.to_numpy()),
                }
            )
    return pd.DataFrame(out)


def symmetric(table: pd.DataFrame, measure: str = SUMMARY) -> pd.DataFrame:
    """Per regime × SRM method: the held-out subjects' ``measure`` against the labelled subjects' in the same
    run, as a ratio of each replicate's means with its 95 % t interval over replicates. With ``srm`` only the
    held-out subject passes through the shared space (whose projection also removes noise); with ``srm-all``
    every subject does, so the two are read alike."""
    out = []
    for (regime, method), part in table[table["method"].isin(SRM)].groupby(["regime", "method"], sort=False):
        means = part.groupby("replicate")[[measure, f"labelled_{measure}"]].mean()
        ratio = means[measure] / means[f"labelled_{measure}"]
        half = stats.t.ppf(0.975, len(ratio) - 1) * ratio.std(ddof=1) / np.sqrt(len(ratio))
        out.append(
            {
                "regime": regime,
                "method": method,
                "measure": measure,
                "heldout": float(means[measure].mean()),
                "labelled": float(means[f"labelled_{measure}"].mean()),
                "ratio": float(ratio.mean()),
                "ci_low": float(ratio.mean() - half),
                "ci_high": float(ratio.mean() + half),
                "n_replicates": len(ratio),
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--replicates", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help=f"of {sorted(METHODS)}, each optionally @weight"
    )
    parser.add_argument(
        "--select",
        action="store_true",
        help="measure --methods on the selection task (training segments only) instead of --regimes",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--heldout",
        nargs="+",
        default=list(SUBJECTS),
        choices=SUBJECTS,
        help="held-out subjects measured (tables of parts run side by side are summarised together)",
    )
    parser.add_argument(
        "--subject-kernel",
        type=int,
        choices=(0, 1, 3, 5),
        help="align.subject_kernel for every run, floor and ceiling included (default: the demo config's)",
    )
    parser.add_argument("--out", type=Path, default=Path("cross_subject.tsv"))
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        help="only summarise tables written before (the rows they share must agree)",
    )
    args = parser.parse_args()
    if args.subject_kernel is not None:
        ALIGN["subject_kernel"] = args.subject_kernel
    if args.summarize:
        table = merged(args.summarize)
    else:
        for method in args.methods:
            method_config(method)  # an unknown method or weight fails before any run
            if args.select and method.partition("@")[0] in SRM:
                parser.error(f"--select: {method} needs clips both subjects watched; the selection task has none")
        if args.select:
            table = select(args.replicates, [m for m in args.methods if m != "none"], args.cores, args.out)
        else:
            methods = ["none", *[m for m in args.methods if m != "none"]]
            table = measure(args.regimes, args.replicates, methods, args.cores, args.out, args.heldout)
    summary = pd.concat([recovered(table, measure) for measure in MEASURES], ignore_index=True)
    summary.to_csv(args.out.with_name(args.out.stem + "_summary.tsv"), sep="\t", index=False)
    pd.set_option("display.width", 160)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    parts = [symmetric(table, measure) for measure in MEASURES if f"labelled_{measure}" in table]
    alike = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not alike.empty:
        alike.to_csv(args.out.with_name(args.out.stem + "_symmetric.tsv"), sep="\t", index=False)
        print("\nheld-out against labelled subjects, in the same runs:")
        print(alike.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
