"""`make bench`: run every speed script in bench/, write what each printed to docs/bench.md and
its headline lines (ratios against the baseline, targets) to the README's "Speed" section.
`--readme-only` rewrites that section from docs/bench.md without rerunning anything.

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
    "descriptor.py", "evaluate.py", "reconstruct.py", "live.py", "occlusion.py",
)
README = ROOT / "README.md"
README_START, README_END = "<!-- bench:start (written by make bench) -->", "<!-- bench:end -->"
HEADLINE = re.compile(r"speed-up|ratio|target|headroom|lost vs|share of", re.I)
HEADLINES = {  # scripts whose headline is not a ratio line
    "profile_train.py": re.compile(r"step.*images/s|^\s+convolution|not in an operator"),
    "adversarial.py": re.compile(r"^(textbook|our) step|speed-up"),
    "occlusion.py": re.compile(r"with hysteresis|recall|false flags"),
}


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
    if "--readme-only" in sys.argv[1:]:  # the README's lines again from the recorded outputs, nothing rerun
        when, commit, on, headlines = recorded_runs(out.read_text())
        write_atomic(README, readme_with_speed(README.read_text(), speed_section(headlines, when, commit, on)))
        print(f"wrote the Speed section of {README.relative_to(ROOT)} from {out.relative_to(ROOT)}")
        return 0
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
        headlines.append((script, status, headline_lines(script, output)))
    write_atomic(out, "\n".join(parts))
    write_atomic(README, readme_with_speed(README.read_text(), speed_section(headlines, when, commit, machine())))
    print(f"wrote {out.relative_to(ROOT)} and the Speed section of {README.relative_to(ROOT)}")
    return 1 if failed else 0


def headline_lines(script: str, output: str) -> list[str]:
    pattern = HEADLINES.get(script, HEADLINE)
    return [" ".join(line.split()) for line in output.splitlines() if pattern.search(line)]


def recorded_runs(bench_md: str) -> tuple[str, str, str, list[tuple[str, str, list[str]]]]:
    """(when, commit, machine, headlines) of the run docs/bench.md records."""
    when, commit = re.search(r"make bench`, (.+?), commit (\S+)\)", bench_md).groups()
    on = re.search(r"^Machine: (.+)\.$", bench_md, re.M).group(1)
    runs = re.findall(r"^## bench/(\S+) \((.+?)\)\n\n```\n(.*?)\n```", bench_md, re.S | re.M)
    return when, commit, on, [(script, status, headline_lines(script, output)) for script, status, output in runs]


def speed_section(headlines: list[tuple[str, str, list[str]]], when: str, commit: str, on: str) -> str:
    """The README's block: each script's headline lines, the full output being in docs/bench.md."""
    lines = [README_START, f"Measured by `make bench` on {when} (commit {commit}), {on}:", ""]
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
