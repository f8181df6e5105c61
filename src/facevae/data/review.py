"""`facevae review`: a contact sheet of one actor's crops, to decide what to curate.

Writes `<out>/index.html` (a static page: open it in a browser), `<out>/<group>_<n>.png`
sheets and, near the top of the page, `<out>/coverage.png`: the expression coverage of the frames
`build` keeps vs. those it leaves out (`facevae.data.coverage`). Every crop extraction wrote is shown,
grouped by reason (kept first, then each drop reason), each cell labelled `video:frame` (videos
numbered in the page's legend). Within a group crops are sorted by the group's score so the
doubtful ones come first: kept crops most likely bad first (highest occlusion score, else lowest
sharpness); dropped crops closest to passing first, so the rescuable ones are at the top. Cells of
frames the curation file changes are framed: red = curated out, green = curated in.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from facevae.core.atomic import atomic_dir
from facevae.core.errors import FaceVAEError
from facevae.core.images import make_grid, upscale
from facevae.data.coverage import coverage_html, frame_features, write_png
from facevae.data.curation import apply_curation, load_curation

CELL_SCALE = 2

LABEL_H = 12

# group -> (score column, transform, sort ascending): the first crops shown are the most doubtful.
SCORES = {
    "kept": ("occlusion", None, False),
    "occluded:mouth": ("occlusion", None, True),  # kept, masked: the lowest scores first (maybe not occluded)
    "occluded": ("occlusion", None, True),
    "blur": ("sharpness", None, False),
    "pose": ("yaw", np.abs, True),
    "tiny": ("face_px", None, False),
    "wrong_identity": ("identity_dist", None, True),
    "multiple_faces": ("identity_dist", None, True),
}

GROUP_ORDER = ("kept", "occluded:mouth", "occluded", "blur", "pose", "tiny", "wrong_identity", "multiple_faces")


def review_groups(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{group: its rows with a crop, sorted by the group's score}, kept first then drop reasons."""
    with_crop = table[table["crop_index"] >= 0].copy()
    reason = with_crop["reason"].astype(str)
    # kept frames with a masked region (`occluded:mouth`) get a group of their own, after "kept"
    masked = (with_crop["kept"] == 1) & reason.str.contains(":")
    group = reason.where(with_crop["kept"] != 1, "kept").replace("", "kept").str.split(":").str[0]
    with_crop["group"] = group.where(~masked, reason)
    names = [g for g in GROUP_ORDER if (with_crop["group"] == g).any()]
    names += sorted(set(with_crop["group"]) - set(names))
    groups = {}
    for name in names:
        rows = with_crop[with_crop["group"] == name].copy()
        rows["score"] = group_score(rows, name)
        groups[name] = rows.sort_values(["score", "video", "frame"], ascending=[SCORES.get(name, ("", 0, True))[2], True, True],
                                        na_position="last", kind="stable")  # fmt: skip
    return groups


def group_score(rows: pd.DataFrame, group: str) -> pd.Series:
    column, transform, _ = SCORES.get(group, ("sharpness", None, True))
    if group == "kept" and column not in rows and "sharpness" in rows:
        # kept without an occlusion score: blurriest first
        return pd.to_numeric(rows["sharpness"], errors="coerce") * -1
    if column not in rows:
        return pd.Series(np.nan, index=rows.index)
    values = pd.to_numeric(rows[column], errors="coerce")
    return transform(values) if transform is not None else values


def write_review(
    faces_dir: str | Path, out_dir: str | Path, actor: str, curation: str | Path | None = None, per_sheet: int = 300
) -> Path:
    """Write the contact sheet of `faces_dir` (an extract output) into `out_dir`; returns index.html."""
    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    table_path, crops_path = faces_dir / "frames.csv", faces_dir / "crops.h5"
    for required in (table_path, crops_path):
        if not required.exists():
            raise FaceVAEError("missing; run `facevae extract` first", required)
    table = pd.read_csv(table_path, keep_default_na=False, low_memory=False).copy()
    hand = load_curation(curation)
    curated = apply_curation(table, hand)
    extracted = ((table["kept"] == 1) & (table["crop_index"] >= 0)).to_numpy()
    table["curated"] = np.where(curated.kept & ~extracted, "in", np.where(~curated.kept & extracted, "out", ""))
    videos = list(dict.fromkeys(table["video"].astype(str)))
    video_no = {name: i for i, name in enumerate(videos)}
    groups = review_groups(table)
    coverage = frame_features(table, curated)  # what `build` keeps vs. leaves out
    sections = []
    with atomic_dir(out_dir) as tmp, h5py.File(crops_path, "r") as h5:
        write_png(coverage, tmp / "coverage.png", f"{actor}: expression coverage")
        images = h5["images"]
        for name, rows in groups.items():
            sheets = []
            for start in range(0, len(rows), per_sheet):
                part = rows.iloc[start : start + per_sheet]
                file_name = f"{name.replace(':', '-')}_{start // per_sheet:03d}.png"  # no ":" in file names
                sheet = contact_sheet(read_crops(images, part["crop_index"].to_numpy()), cell_labels(part, video_no, len(videos)),
                                      part["curated"].tolist())  # fmt: skip
                sheet.save(tmp / file_name)
                sheets.append((file_name, part))
            sections.append((name, rows, sheets))
        figure = coverage_html(coverage, "coverage.png")
        page = review_html(actor, faces_dir, table, videos, sections, hand.path, figure)
        (tmp / "index.html").write_text(page)
    return out_dir / "index.html"


def read_crops(images: h5py.Dataset, index: np.ndarray) -> np.ndarray:
    order = np.argsort(index)
    out = np.empty((len(index), *images.shape[1:]), dtype=np.uint8)
    out[order] = images[index[order]]
    return out


def cell_labels(rows: pd.DataFrame, video_no: dict[str, int], n_videos: int) -> list[str]:
    if n_videos == 1:
        return [f"f{frame}" for frame in rows["frame"]]
    return [f"{video_no[str(v)]}:{frame}" for v, frame in zip(rows["video"], rows["frame"])]


def contact_sheet(crops: np.ndarray, labels: list[str], marks: list[str], ncols: int = 15) -> Image.Image:
    """Crops enlarged CELL_SCALE times, each above its label; curated cells framed red (out) / green (in)."""
    cells = []
    for crop, label, mark in zip(crops, labels, marks):
        face = upscale(crop, CELL_SCALE)
        cell = Image.new("RGB", (face.shape[1], face.shape[0] + LABEL_H), "white")
        cell.paste(Image.fromarray(face), (0, 0))
        draw = ImageDraw.Draw(cell)
        draw.text((2, face.shape[0]), label, fill="black")
        if mark:
            draw.rectangle([0, 0, face.shape[1] - 1, face.shape[0] - 1], outline="red" if mark == "out" else "green", width=3)
        cells.append(np.asarray(cell))
    return Image.fromarray(make_grid(np.stack(cells), ncols=ncols, pad=3))


def review_html(
    actor, faces_dir, table, videos, sections, curation_path, coverage=""
) -> str:
    esc = html.escape
    reason = table["reason"].astype(str)
    counts = reason.where((table["kept"] != 1) | reason.str.contains(":"), "kept").replace("", "kept").value_counts()
    legend = "".join(f"<li><b>{i}</b>: {esc(v)}</li>" for i, v in enumerate(videos))
    summary = "".join(f"<tr><td>{esc(str(k))}</td><td>{int(n)}</td></tr>" for k, n in counts.items())
    curation = esc(str(curation_path)) if curation_path else f"none (write data/curation/{esc(actor)}.yaml)"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>review: {esc(actor)}</title>",
        (
            "<style>body{font-family:sans-serif;margin:1em 2em}img{max-width:100%;image-rendering:pixelated}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
            "code{background:#f3f3f3}</style></head><body>"
        ),
        f"<h1>{esc(actor)}: {len(table)} frames from {esc(str(faces_dir))}</h1>",
        (
            f"<p>Cells are labelled <code>video:frame</code> (one video: <code>f</code>frame). Curation file: "
            f"{curation}. Red frame = curated out, green = curated in.</p>"
        ),
        (
            "<p>To curate, list frames in <code>data/curation/&lt;actor&gt;.yaml</code> and rerun <code>build</code>:<br>"
            "<code>exclude: [{video: clip.mp4, frames: \"70-227\"}]</code> &nbsp; "
            "<code>keep: [{video: clip.mp4, frames: \"12, 15-18\"}]</code></p>"
        ),
        coverage,
        f"<h3>Videos</h3><ul>{legend}</ul><h3>Frames by reason</h3><table>{summary}</table>",
    ]
    for name, rows, sheets in sections:
        column = SCORES.get(name, ("sharpness",))[0]
        parts.append(f"<h2 id='{esc(name)}'>{esc(name)} ({len(rows)})</h2>")
        parts.append(f"<p>sorted by {esc(column)}, most doubtful first</p>")
        for file_name, part in sheets:
            listing = "".join(
                f"<tr><td>{i}</td><td>{esc(str(v))}</td><td>{f}</td><td>{s:.4g}</td><td>{c}</td></tr>"
                for i, (v, f, s, c) in enumerate(zip(part["video"], part["frame"], part["score"], part["curated"]))
            )
            parts.append(
                f"<p><img src='{file_name}' alt='{esc(name)}'></p><details><summary>list ({len(part)})</summary>"
                f"<table><tr><th>#</th><th>video</th><th>frame</th><th>{esc(column)}</th><th>curated</th></tr>"
                f"{listing}</table></details>"
            )
    parts.append(f"<script type='application/json' id='groups'>{json.dumps({n: len(r) for n, r, _ in sections})}</script>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
