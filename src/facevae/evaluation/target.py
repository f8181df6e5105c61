"""Issue 7's target: the per-clip checks, their bounds and the share of checks a model passes."""

from __future__ import annotations

import numpy as np

from facevae.core.config import TargetConfig
from facevae.faces.expression import EXPRESSION_FEATURES

TARGET_CHECKS = ("expression_r", "every_feature", "gain", "identity", "sharpness", "jitter", "in_range", "plausible")


def target_values(scores: dict[str, float]) -> dict[str, float]:
    """The number each target check reads (`every_feature`: the lowest of the four feature rs, NaN
    when any is NaN)."""
    nan = float("nan")
    return {
        "expression_r": scores.get("expression_r", nan),
        "every_feature": float(np.min([scores.get(f"r_{name}", nan) for name in EXPRESSION_FEATURES])),
        "gain": scores.get("expression_gain", nan),
        "identity": scores.get("identity_pass", nan),
        "sharpness": scores.get("sharpness", nan),
        "jitter": scores.get("jitter", nan),
        "in_range": scores.get("in_range", nan),
        "plausible": scores.get("plausible", nan),
    }


def target_bounds(target: TargetConfig) -> dict[str, tuple[float, float]]:
    """Each check's [low, high] (evaluate.target), in TARGET_CHECKS order."""
    return {
        "expression_r": (target.expression_r, np.inf), "every_feature": (target.feature_r, np.inf),
        "gain": target.gain, "identity": (target.identity_pass, np.inf), "sharpness": (target.sharpness, np.inf),
        "jitter": (-np.inf, target.jitter), "in_range": (target.in_range, np.inf),
        "plausible": (target.plausible, np.inf),
    }


def target_checks(scores: dict[str, float], target: TargetConfig) -> dict[str, bool]:
    """Which parts of the target (evaluate.target) one clip's scores clear; a NaN clears nothing."""
    bounds = target_bounds(target)
    return {name: bool(np.isfinite(value) and bounds[name][0] <= value <= bounds[name][1])
            for name, value in target_values(scores).items()}


def target_report(transfer: dict[str, dict[str, dict]], mode: str, target: TargetConfig,
                  held_out: set[str]) -> dict:
    """The target checks of `mode` on every clip, and two summaries over the held-out clips (all
    clips when none is held out): `target_score`, the share of checks passed, and
    `clips_meeting_target`, how many clips clear every check."""
    clips = {name: target_checks(by_mode[mode], target) for name, by_mode in transfer.items() if mode in by_mode}
    counted = [name for name in clips if name in held_out] or list(clips)
    passed = [sum(clips[name].values()) for name in counted]
    return {
        "mode": mode,
        "bar": target.model_dump(mode="json"),
        "counted": counted,
        "clips": {name: {**checks, "passed": sum(checks.values()), "of": len(checks)} for name, checks in clips.items()},
        "target_score": float(sum(passed) / (len(TARGET_CHECKS) * len(counted))) if counted else float("nan"),
        "clips_meeting_target": sum(p == len(TARGET_CHECKS) for p in passed),
    }


def target_key(target: TargetConfig) -> str:
    """The target as one line: its checks and their bar (a champion measured against another is not comparable)."""
    bar = ",".join(f"{k}={v}" for k, v in target.model_dump(mode="json").items())
    return f"{'+'.join(TARGET_CHECKS)}; {bar}"
