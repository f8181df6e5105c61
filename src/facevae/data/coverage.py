"""Expression coverage: what the dataset keeps of an actor's expressions, and what it drops.

Every frame with a face (landmarks in frames.csv) gets its expression features
(`facevae.faces.expression`) and one group, decided exactly as `build_actor_dataset` decides:

    kept          in the dataset
    masked        in the dataset with a region masked out of the loss (`occluded:mouth`)
    curated_out   kept by extraction, excluded by the curation file
    dropped:<r>   dropped by extraction's filter r (no_face frames have no landmarks: not shown)

Outputs (`write_coverage`): coverage.csv (DVC plot data: one row per frame and feature with its
tenth of the feature's range, drawn by `dvc plots show` as a heatmap of feature | group x range),
coverage.json (DVC metrics: frames per group, share of each feature's range the dataset
covers) and coverage.png (one panel per feature).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from facevae.core.atomic import atomic_path, write_text
from facevae.data.curation import CurationResult, apply_curation, load_curation
from facevae.data.dataset import table_landmarks
from facevae.faces.expression import EXPRESSION_FEATURES, expression_features

IN_DATASET = ("kept", "masked")

QUANTILES = (5, 25, 50, 75, 95)

BINS = 10  # coverage.csv: the range of each feature in tenths

COLOURS = {"kept": "tab:green", "masked": "tab:blue", "curated_out": "tab:red"}

DROPPED_COLOUR = "tab:gray"


def frame_groups(table: pd.DataFrame, curated: CurationResult) -> np.ndarray:
    """The group of every row of frames.csv (see the module docstring)."""
    reason = table["reason"].astype(str)
    extracted = ((table["kept"] == 1) & (table["crop_index"] >= 0)).to_numpy()
    masked = reason.str.startswith("occluded:").to_numpy()
    base = reason.str.split(":").str[0].replace("", "no_crop")
    groups = np.array("dropped:" + base, dtype=object)
    groups[extracted & ~curated.kept] = "curated_out"
    groups[curated.kept] = "kept"
    groups[curated.kept & masked] = "masked"
    return groups


def frame_features(table: pd.DataFrame, curated: CurationResult) -> pd.DataFrame:
    """One row per frame with a face: video, frame, group and the expression features."""
    features = expression_features(table_landmarks(table))[:, : len(EXPRESSION_FEATURES)]
    frames = pd.DataFrame(features, columns=list(EXPRESSION_FEATURES))
    frames.insert(0, "group", frame_groups(table, curated))
    frames.insert(0, "frame", table["frame"].to_numpy())
    frames.insert(0, "video", table["video"].astype(str).to_numpy())
    return frames[np.isfinite(features).all(axis=1)].reset_index(drop=True)


def group_order(frames: pd.DataFrame) -> list[str]:
    """kept, masked, curated_out, then the drop reasons, most frequent first."""
    counts = frames["group"].value_counts()
    first = [g for g in (*IN_DATASET, "curated_out") if g in counts]
    return first + [g for g in counts.index if g not in first]


def summary(frames: pd.DataFrame) -> pd.DataFrame:
    """count, min, q5..q95, max of every feature in every group (one row per feature x group)."""
    rows = []
    for feature in EXPRESSION_FEATURES:
        for group in group_order(frames):
            values = frames.loc[frames["group"] == group, feature].to_numpy()
            stats = dict(
                zip((f"q{q}" for q in QUANTILES), np.percentile(values, QUANTILES))
            )
            rows.append({"feature": feature, "group": group, "count": len(values),
                         "min": values.min(), **stats, "max": values.max()})  # fmt: skip
    return pd.DataFrame(rows)


def range_share(frames: pd.DataFrame, feature: str) -> float:
    """Share of the feature's range (over every face) that the dataset's frames span."""
    values = frames[feature]
    inside = values[frames["group"].isin(IN_DATASET)]
    full = values.max() - values.min()
    if inside.empty:
        return 0.0
    return float((inside.max() - inside.min()) / full) if full > 0 else 1.0


def metrics(frames: pd.DataFrame) -> dict:
    counts = frames["group"].value_counts()
    return {
        "frames": {group: int(counts[group]) for group in group_order(frames)},
        "range_share": {
            f: round(range_share(frames, f), 4) for f in EXPRESSION_FEATURES
        },
    }


def range_bins(frames: pd.DataFrame, feature: str, bins: int = BINS) -> pd.Series:
    """Each frame's place in the feature's range over every face: "00-10%" ... "90-100%"."""
    values = frames[feature]
    span = values.max() - values.min()
    position = (values - values.min()) / span if span > 0 else values * 0
    index = np.minimum((position * bins).astype(int), bins - 1) * (100 // bins)
    return index.map(lambda low: f"{low:02d}-{low + 100 // bins}%")


def plot_rows(frames: pd.DataFrame) -> pd.DataFrame:
    """Long form for `dvc plots` (template confusion_normalized, x = range_bin, y = series): one
    row per frame and feature, so each "feature | group" row of the heatmap is that group's
    histogram over the feature's range; cells the kept rows leave empty are what was dropped."""
    parts = []
    for feature in EXPRESSION_FEATURES:
        part = frames[["video", "frame", "group"]].assign(
            feature=feature, value=frames[feature]
        )
        part["range_bin"] = range_bins(frames, feature)
        parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    long["series"] = long["feature"] + " | " + long["group"]
    return long[["series", "range_bin", "value", "feature", "group", "video", "frame"]]


def figure(frames: pd.DataFrame, title: str):
    """One panel per feature: each group's values as a box over its jittered points."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    groups = group_order(frames)[::-1]  # kept on top
    fig = Figure(figsize=(11, 2.2 + 0.55 * len(groups) * 2))
    axes = fig.subplots(2, 2).ravel()
    jitter = np.random.default_rng(0)
    for ax, feature in zip(axes, EXPRESSION_FEATURES):
        for y, group in enumerate(groups):
            values = frames.loc[frames["group"] == group, feature].to_numpy()
            colour = COLOURS.get(group, DROPPED_COLOUR)
            ax.scatter(
                values,
                y + jitter.uniform(-0.25, 0.25, len(values)),
                s=6,
                alpha=0.5,
                color=colour,
                lw=0,
            )
            q5, q25, q50, q75, q95 = np.percentile(values, QUANTILES)
            ax.hlines(y, q5, q95, color="black", lw=1)
            ax.barh(
                y, q75 - q25, left=q25, height=0.6, fill=False, edgecolor=colour, lw=1.5
            )
            ax.vlines(q50, y - 0.3, y + 0.3, color="black", lw=2)
        inside = frames.loc[frames["group"].isin(IN_DATASET), feature]
        if not inside.empty:
            ax.axvspan(inside.min(), inside.max(), color="tab:green", alpha=0.08, lw=0)
        ax.set_yticks(
            range(len(groups)),
            [f"{g} ({(frames['group'] == g).sum()})" for g in groups],
        )
        ax.set_title(
            f"{feature}: dataset spans {range_share(frames, feature):.0%} of the range",
            fontsize=10,
        )
        ax.set_xlabel(
            "inter-ocular distances; box: quartiles, whiskers: 5-95 %", fontsize=8
        )
        ax.grid(axis="x", alpha=0.3)
    counts = ", ".join(f"{g} {(frames['group'] == g).sum()}" for g in groups[::-1])
    fig.suptitle(f"{title}\n{counts}", fontsize=11)
    fig.tight_layout()
    return fig


def write_png(frames: pd.DataFrame, path: str | Path, title: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure(frames, title).savefig(tmp, format="png", dpi=90)
    return path


def read_frames(faces_dir: str | Path, curation: str | Path | None) -> pd.DataFrame:
    """Coverage frames of an extract output folder, curated as `build` curates it."""
    table = pd.read_csv(
        Path(faces_dir) / "frames.csv", keep_default_na=False, low_memory=False
    )
    return frame_features(table, apply_curation(table, load_curation(curation)))


def write_coverage(frames: pd.DataFrame, out_dir: str | Path, actor: str) -> dict:
    """coverage.csv, coverage.json and coverage.png in out_dir; returns the metrics."""
    out_dir = Path(out_dir)
    result = metrics(frames)
    with atomic_path(out_dir / "coverage.csv") as tmp:
        plot_rows(frames).to_csv(tmp, index=False, float_format="%.5g")
    write_text(out_dir / "coverage.json", json.dumps(result, indent=2) + "\n")
    write_png(frames, out_dir / "coverage.png", f"{actor}: expression coverage")
    return result


def coverage_html(frames: pd.DataFrame, png_name: str) -> str:
    """The review page's section: the figure, then the summary table folded away."""
    table = summary(frames)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{v:.3g}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                         for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )  # fmt: skip
    return (
        "<h3>Expression coverage</h3><p>Expression features of every frame with a face, by what "
        "the dataset does with it (kept, masked = kept with a region out of the loss, curated_out, "
        "dropped:&lt;reason&gt;): what a filter or a curation takes away. Shaded: the span of the "
        "dataset's frames.</p>"
        f"<p><img src='{html.escape(png_name)}' alt='expression coverage'></p>"
        f"<details><summary>quantiles</summary><table><tr>{head}</tr>{body}</table></details>"
    )
