"""`make bench`: run every speed script in bench/ and write what each printed to docs/bench.md.

Each script times a plain baseline and ours in one run and prints the ratio; this file only runs
them and records their output with the machine it ran on, so the figures are never typed by hand.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("extract.py", "extract_workers.py", "train.py", "ddp.py", "ssim.py", "reconstruct.py", "live.py", "occlusion.py")


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
    failed = 0
    for script in SCRIPTS:
        print(f"bench/{script} ...", flush=True)
        output, seconds, code = run(script)
        failed += code != 0
        status = f"{seconds:.0f} s" if code == 0 else f"FAILED (exit {code}) after {seconds:.0f} s"
        parts += [f"## bench/{script} ({status})", "", "```", output, "```", ""]
        print(output, flush=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    print(f"wrote {out.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
