"""Evaluation reports a person opens: metrics.json (DVC metrics), CSV plot data, PNG + HTML summary."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from facevae.core.atomic import write_text
from facevae.core.config import TargetConfig
from facevae.core.images import make_grid, save_png, spread, upscale
from facevae.evaluation.gaps import beyond_png, mark_beyond, plausibility_png
from facevae.evaluation.page import page
from facevae.evaluation.scoring import RECON_MODES, Evaluation
from facevae.evaluation.target import TARGET_CHECKS, target_bounds, target_values
from facevae.faces.expression import FEATURES

STRIP_FRAMES = 8

TABLE_COLUMNS = ("expression_r", "expression_r_within", "within_footage", "expression_gain", "r_mouth_open",
                 "r_mouth_width", "r_eye_open", "r_brow_height", "identity_pass", "sharpness", "jitter", "in_range",
                 "plausible")

RECON_COLUMNS = ("mse", "psnr", "ssim", "neg_elbo", "active_dims")


def json_safe(value):
    """NaN and infinities become null: metrics.json stays strict JSON for every reader."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value



def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table_rows(evaluation: Evaluation) -> list[list[str]]:
    """One row per (driver, mode) for transfer, then one per mode for val reconstruction."""
    rows = [["transfer: driver", "mode", *TABLE_COLUMNS]]
    for driver, by_mode in evaluation.metrics["transfer"].items():
        for mode in evaluation.modes:
            rows.append([driver, mode, *(fmt(by_mode[mode].get(c)) for c in TABLE_COLUMNS)])
    rows.append(["reconstruction: val", "mode", *RECON_COLUMNS])
    for mode in RECON_MODES:
        recon = evaluation.metrics["reconstruction"][mode]
        rows.append(["", mode, *(fmt(recon.get(c)) for c in RECON_COLUMNS)])
    return rows


def target_rows(evaluation: Evaluation) -> list[list[str]]:
    """One row per clip: each target check as its value and pass / FAIL, for the headline mode."""
    target = evaluation.metrics.get("target")
    if not target:
        return []
    rows = [["target: driver", "mode", *TARGET_CHECKS, "passed"]]
    for driver, checks in target["clips"].items():
        values = target_values(evaluation.metrics["transfer"][driver][target["mode"]])
        cells = [f"{fmt(value)} {'pass' if checks[check] else 'FAIL'}" for check, value in values.items()]
        held = "" if driver in target["counted"] else " (not counted)"
        rows.append([driver + held, target["mode"], *cells, f"{checks['passed']}/{checks['of']}"])
    return rows


def target_line(evaluation: Evaluation) -> str:
    target = evaluation.metrics.get("target")
    if not target:
        return ""
    bounds = target_bounds(TargetConfig(**target["bar"]))
    return (f"target (evaluate.target): {', '.join(bound_text(check, *bounds[check]) for check in TARGET_CHECKS)}; "
            f"{target['clips_meeting_target']} of "
            f"{len(target['counted'])} counted clips meet it all, {target['target_score']:.3f} of the checks pass")


def bound_text(check: str, low: float, high: float) -> str:
    if high == np.inf:
        return f"{check} >= {low}"
    return f"{check} <= {high}" if low == -np.inf else f"{check} {low}-{high}"


def strip(evaluation: Evaluation, driver: str, zoom: int = 2) -> np.ndarray:
    """Rows: driver crops, then each mode's outputs, for frames spread over the clip; outputs
    driven beyond the actor's footage are framed in red."""
    clip, results = evaluation.clips[driver], evaluation.transfers[driver]
    pick = spread(len(clip.crops), STRIP_FRAMES)
    rows = [clip.crops[pick]]
    for mode in evaluation.output_modes:
        beyond = results[mode].beyond_range
        rows.append(mark_beyond(results[mode].outputs[pick], None if beyond is None else beyond[pick]))
    return upscale(make_grid(np.concatenate(rows), ncols=len(pick)), zoom)


def render_table(rows: list[list[str]]) -> Image.Image:
    font = ImageFont.load_default()
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) * 7 + 12 for i in range(len(rows[0]))]
    line = 16
    image = Image.new("RGB", (sum(widths) + 8, line * len(rows) + 8), "white")
    draw = ImageDraw.Draw(image)
    for j, row in enumerate(rows):
        x = 4
        header = row[1] == "mode"
        for i, cell in enumerate(row):
            colour = (0, 0, 160) if header else (176, 0, 0) if cell.endswith("FAIL") else (0, 0, 0)
            draw.text((x, 4 + j * line), cell, fill=colour, font=font)
            x += widths[i]
    return image


def summary_png(evaluation: Evaluation, actor: str, path: Path) -> Path:
    tables = [render_table(rows) for rows in (target_rows(evaluation), table_rows(evaluation)) if rows]
    table = Image.new("RGB", (max(t.width for t in tables), sum(t.height for t in tables)), "white")
    for i, part in enumerate(tables):
        table.paste(part, (0, sum(t.height for t in tables[:i])))
    header = [line for line in (f"facevae evaluation: {actor}", target_line(evaluation)) if line]
    sections = [(f"driver {driver}: rows = driver, {', '.join(evaluation.output_modes)} "
                 "(red frame: driven beyond the actor's footage)", Image.fromarray(strip(evaluation, driver)))
                for driver in evaluation.clips]
    return save_png(page(header, sections, top=table), path)


def html_table(rows: list[list[str]]) -> str:
    """Header rows (second cell "mode") as th; a cell ending in FAIL gets class 'fail'."""
    def cell(text: str, tag: str) -> str:
        marked = " class='fail'" if text.endswith("FAIL") else ""
        return f"<{tag}{marked}>{html.escape(text)}</{tag}>"

    body = ("<tr>" + "".join(cell(c, "th" if row[1] == "mode" else "td") for c in row) + "</tr>" for row in rows)
    return f"<table>{''.join(body)}</table>"


def summary_html(evaluation: Evaluation, actor: str, png_name: str, champion: dict | None) -> str:
    decision = f"<p>Champion: {html.escape(json.dumps(champion))}</p>" if champion else ""
    goal = target_rows(evaluation)
    if goal:
        decision += f"<p>{html.escape(target_line(evaluation))}</p>{html_table(goal)}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>facevae {html.escape(actor)}</title>"
        "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:right} .fail{color:#b00} "
        "img{image-rendering:pixelated}</style></head><body>"
        f"<h1>facevae evaluation: {html.escape(actor)}</h1>{decision}{html_table(table_rows(evaluation))}"
        "<p>Expression r: Pearson correlation of landmark features (driver vs output) over the clip; "
        "expression_r_within: the same over the frames whose expression lies within her footage (each of the four "
        "features, as an offset from each person's neutral face, within her training frames' 1st-99th percentile), "
        "within_footage: the share of such frames; "
        "gain: std(output)/std(driver); identity: share of outputs recognised as the actor; "
        "sharpness: relative to the actor's own crops; jitter: frame-to-frame roughness of the output's "
        "features over the driver's (1 = as smooth as the driver); in_range: share of driven faces whose latent "
        "code is no farther from the actor's training codes than the actor's own val frames are (beyond it the "
        "decoder extrapolates: blotchy faces that landmark readers can still score well; such faces have a red frame in the strips); "
        "plausible: share of output faces whose grey SSIM with her most similar training frame is at least 0.75 (pixels "
        "only: below it faces look blotchy or ghostly). Modes: seed (decode(mu(crop))), "
        "normalised, relative, landmark, blend (facevae.transfer.drive); baselines: nearest_neighbour, pca; "
        "coverage: the actor's own crop with the closest expression to each driver frame (what the actor's "
        "footage holds for this driver; a diagnostic that reads the metric's features); "
        "ceiling: the driver's own crops scored as outputs (the most any method can score on that clip: "
        "landmarks of small faces are noisy); headline mode: "
        f"{html.escape(evaluation.mode)}.</p>"
        f"<img src='{html.escape(png_name)}' alt='summary'>"
        "<h2>Driven beyond the actor's footage</h2><p>Per clip, the faces the headline mode drove farthest from the "
        "actor's training codes, farthest first: the driver, the output, and the actor's own frame that comes closest. "
        "Where they differ, the footage has no face like the driver's: film more of it.</p>"
        "<img src='beyond.png' alt='faces driven beyond the footage'>"
        "<h2>The least plausible outputs</h2><p>Per clip, the headline mode's outputs least like any frame she has, "
        "worst first, above her most similar training frame.</p>"
        "<img src='plausibility.png' alt='least plausible outputs'></body></html>\n"
    )


def transfer_table(evaluation: Evaluation, driver: str) -> pd.DataFrame:
    clip, results = evaluation.clips[driver], evaluation.transfers[driver]
    table = pd.DataFrame({"frame": clip.frames})
    for i, name in enumerate(FEATURES):
        table[f"driver_{name}"] = next(iter(results.values())).driver_features[:, i]
        for mode in evaluation.modes:
            table[f"{mode}_{name}"] = results[mode].output_features[:, i]
    return table


def write_reports(evaluation: Evaluation, actor: str, out_dir: Path, champion: dict | None = None) -> list[Path]:
    """metrics.json, kl_per_dim.csv, transfer/<driver>.csv, summary.png, beyond.png, summary.html in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**evaluation.metrics, "headline": evaluation.headline()}
    if champion:
        metrics["champion"] = champion
    paths = [write_text(out_dir / "metrics.json", json.dumps(json_safe(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n")]
    kl = pd.DataFrame({"dim": np.arange(len(evaluation.kl_dims)), "kl": evaluation.kl_dims})
    paths.append(write_text(out_dir / "kl_per_dim.csv", kl.to_csv(index=False)))
    for driver in evaluation.clips:
        table = transfer_table(evaluation, driver).to_csv(index=False)
        paths.append(write_text(out_dir / "transfer" / f"{Path(driver).stem}.csv", table))
    paths.append(summary_png(evaluation, actor, out_dir / "summary.png"))
    paths.append(beyond_png(evaluation, actor, out_dir / "beyond.png"))
    paths.append(plausibility_png(evaluation, actor, out_dir / "plausibility.png"))
    paths.append(write_text(out_dir / "summary.html", summary_html(evaluation, actor, "summary.png", champion)))
    return paths
