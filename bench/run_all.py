"""`make bench`: run every speed script in bench/, write what each printed to docs/bench.md and
its headline lines (ratios against the baseline, targets) to the README's "Speed" section.

Each script times a plain baseline and ours in one run and prints the ratio; this file only runs
them and records their output with the machine it ran on, so the figures are never typed by hand.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = (
    "extract.py", "extract_workers.py", "train.py", "adversarial.py", "profile_train.py", "ddp.py", "ssim.py",
    "evaluate.py", "reconstruct.py", "live.py", "occlusion.py",
)
README = ROOT / "README.md"
README_START, README_END = "<!-- bench:start (written by make bench) -->", "<!-- bench:end -->"
HEADLINE = re.compile(r"speed-up|ratio|target|headroom|lost vs|images/s = |share of", re.I)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def run(script: str) -> tuple[str, float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, capture_output=True, text=True)
    output = (done.stdout + (done.stderr if done.returncode else "")).strip()
    return output, time.perf_counter() - start, done.returncode


def main() -> int:
    out = ROOT / "docs" / "bench.md"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    parts = [f"# Speed (written by `make bench`, {when}, commit {commit or 'unknown'})", "",
             f"Machine: {machine()}.", "",
             "Each script runs its baseline and ours in one run and prints the ratio; what it printed:", ""]
    failed, headlines = 0, []
    for script in SCRIPTS:
        print(f"bench/{script} ...", flush=True)
        output, seconds, code = run(script)
        failed += code != 0
        status = f"{seconds:.0f} s" if code == 0 else f"FAILED (exit {code}) after {seconds:.0f} s"
        parts += [f"## bench/{script} ({status})", "", "```", output, "```", ""]
        print(output, flush=True)
        headlines.append((script, status, [line.strip() for line in output.splitlines() if HEADLINE.search(line)]))
    write_atomic(out, "\n".join(parts))
    write_atomic(README, readme_with_speed(README.read_text(), speed_section(headlines, when, commit)))
    print(f"wrote {out.relative_to(ROOT)} and the Speed section of {README.relative_to(ROOT)}")
    return 1 if failed else 0


def speed_section(headlines: list[tuple[str, str, list[str]]], when: str, commit: str) -> str:
    """The README's block: each script's headline lines, the full output being in docs/bench.md."""
    lines = [README_START, f"Measured by `make bench` on {when} (commit {commit}), {machine()}:", ""]
    for script, status, found in headlines:
        text = "; ".join(found) if found else "(see docs/bench.md)"
        lines.append(f"- `bench/{script}` ({status}): {text}")
    return "\n".join([*lines, README_END])


def readme_with_speed(readme: str, block: str) -> str:
    if README_START not in readme or README_END not in readme:
        raise SystemExit(f"README.md lacks the {README_START} ... {README_END} markers of the Speed section")
    before, rest = readme.split(README_START, 1)
    return before + block + rest.split(README_END, 1)[1]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
