"""`dvc repro` with a line per stage that says how long is left (`facevae repro`, `make demo`).

Before running, `dvc status` names the stages that will run; each time DVC starts one, a line gives
its place, its usual time and the time left. Usual times are what the stages took on this machine
last time (.dvc/tmp/facevae-stage-seconds.json, rewritten after every run), else what they took
in the project's own `make demo` on a 2-core CPU (pipelines/stage_seconds.json). DVC's output
(and the stages' progress bars) passes through unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from facevae.core.atomic import write_json
from facevae.core.errors import FaceVAEError

LOCAL_TIMES = Path(".dvc/tmp/facevae-stage-seconds.json")
SHIPPED_TIMES = Path("pipelines/stage_seconds.json")
STAGE_STARTS = re.compile(rb"Running stage '([^']+)'")


def stages_to_run(targets: list[str], dvc: str = "dvc") -> list[str]:
    """The stages `dvc repro TARGETS` would run, upstream first: those `dvc status` reports changed,
    and every stage downstream of one (DVC reruns what depends on a changed output)."""
    done = subprocess.run([dvc, "status", "--json", *targets], capture_output=True, text=True)
    if done.returncode != 0:
        raise FaceVAEError(f"`dvc status` failed: {done.stderr.strip() or done.stdout.strip()}")
    changed = set(json.loads(done.stdout or "{}"))
    if not changed:
        return []
    nodes, edges = dag(dvc)
    affected = changed | downstream_of(changed, edges)
    return [stage for stage in topological_order(nodes, edges) if stage in affected]


def dag(dvc: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The stages and their (upstream, downstream) pairs, from `dvc dag --dot`."""
    done = subprocess.run([dvc, "dag", "--dot"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FaceVAEError(f"`dvc dag` failed: {done.stderr.strip() or done.stdout.strip()}")
    nodes = re.findall(r'^"([^"]+)";$', done.stdout, re.M)
    return nodes, re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', done.stdout)


def topological_order(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    order: list[str] = []
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in order and all(a in order for a, b in edges if b == n)]
        if not ready:
            raise FaceVAEError("dvc.yaml's stages form a cycle")
        order += ready
    return order


def downstream_of(changed: set[str], edges: list[tuple[str, str]]) -> set[str]:
    found, frontier = set(), set(changed)
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - found
        found |= frontier
    return found


@dataclass
class StageClock:
    """Usual seconds per stage, and the plan of one run."""

    usual: dict[str, float]
    plan: list[str]
    started: float = field(default_factory=time.perf_counter)
    measured: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    begun: list[str] = field(default_factory=list)
    current_start: float = 0.0

    def estimate(self, stage: str) -> float | None:
        if stage in self.usual:
            return self.usual[stage]
        same_kind = [s for name, s in self.usual.items() if name.split("@")[0] == stage.split("@")[0]]
        return sum(same_kind) / len(same_kind) if same_kind else None

    def start(self, stage: str) -> str:
        now = time.perf_counter()
        self.finish(now)
        self.current, self.current_start = stage, now
        self.begun.append(stage)
        left = [self.estimate(s) for s in [stage, *(s for s in self.plan if s not in self.begun)]]
        known = [t for t in left if t is not None]
        usual = left[0]
        usual_text = f"usually {duration(usual)}" if usual is not None else "not timed before"
        left_text = left_estimate(known, len(left))
        place = f"{len(self.begun)} of {max(len(self.plan), len(self.begun))}"
        return f"[facevae] stage {place}: {stage}, {usual_text}; {left_text}, {duration(now - self.started)} so far"

    def finish(self, now: float) -> None:
        if self.current is not None:
            self.measured[self.current] = round(now - self.current_start, 1)
            self.current = None


def left_estimate(known: list[float], stages: int) -> str:
    if not known:
        return "time left unknown (no stage timed before)"
    return f"about {duration(sum(known))} left" + ("" if len(known) == stages else " (some stages never timed)")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def read_times(path: Path) -> dict[str, float]:
    """A times file's seconds per stage; a missing or damaged one only costs the estimates."""
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).get("seconds", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def usual_times() -> dict[str, float]:
    return {**read_times(SHIPPED_TIMES), **read_times(LOCAL_TIMES)}


def run_repro(dvc_args: list[str], out: IO[bytes] | None = None, dvc: str = "dvc") -> int:
    """`dvc repro DVC_ARGS`, its output passed through with a progress line at each stage start.
    Returns DVC's exit code; the stages' times are recorded when it succeeds."""
    out = out or sys.stdout.buffer
    targets = [a for a in dvc_args if not a.startswith("-")]
    clock = StageClock(usual_times(), stages_to_run(targets, dvc))
    if not clock.plan and "-f" not in dvc_args and "--force" not in dvc_args:
        out.write(b"[facevae] every stage is up to date\n")
    else:
        known = [t for t in (clock.estimate(s) for s in clock.plan) if t is not None]
        total = left_estimate(known, len(clock.plan)).replace(" left", " in all")
        out.write(f"[facevae] {len(clock.plan)} stages to run, {total}\n".encode())
    out.flush()
    process = subprocess.Popen([dvc, "repro", *dvc_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pending = b""
    assert process.stdout is not None
    while chunk := os.read(process.stdout.fileno(), 65536):
        out.write(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for match in (STAGE_STARTS.search(line) for line in lines):
            if match:
                out.write((clock.start(match.group(1).decode()) + "\n").encode())
        pending = pending[-4096:]  # a progress bar's \r updates: no stage line hides in them
        out.flush()
    code = process.wait()
    clock.finish(time.perf_counter())
    elapsed = time.perf_counter() - clock.started
    out.write(f"[facevae] {'done' if code == 0 else f'dvc repro failed (exit {code})'} after {duration(elapsed)}\n".encode())
    out.flush()
    if code == 0 and clock.measured:
        record_times(clock.measured)
    return code


def record_times(measured: dict[str, float], path: Path = LOCAL_TIMES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"cpus": os.cpu_count(), "seconds": {**read_times(path), **measured}})
