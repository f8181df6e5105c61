"""`facevae repro`: dvc repro with a progress line per stage, on a real two-stage DVC project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facevae.apps.repro import LOCAL_TIMES, SHIPPED_TIMES, StageClock, duration

DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")

DVC_YAML = """stages:
  first:
    cmd: python -c "import time; time.sleep(0.3); open('a.txt', 'w').write('a')"
    outs: [a.txt]
  second:
    foreach: [x, y]
    do:
      cmd: python -c "import sys; open('b-${item}.txt', 'w').write(open('a.txt').read() + open('knob.txt').read()); sys.exit(int(open('knob.txt').read() == 'fail'))"
      deps: [a.txt, knob.txt]
      outs: ["b-${item}.txt"]
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    subprocess.run([DVC, "init", "--no-scm", "-q"], check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "knob.txt").write_text("1")
    return tmp_path


def repro(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "facevae.cli", "repro", *args], capture_output=True, text=True, env=env)


def stage_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("[facevae] stage")]


def test_each_stage_gets_a_line_and_times_are_recorded(project: Path):
    done = repro()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[facevae] 3 stages to run" in done.stdout
    lines = stage_lines(done.stdout)
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == ["first", "second@x", "second@y"]
    assert lines[0].startswith("[facevae] stage 1 of 3: first, not timed before; time left unknown")
    assert "[facevae] done after" in done.stdout
    recorded = json.loads((project / LOCAL_TIMES).read_text())["seconds"]
    assert set(recorded) == {"first", "second@x", "second@y"}
    assert recorded["first"] >= 0.3  # it sleeps that long

    # up to date: nothing runs; a changed dependency reruns its stages, with estimates from last time
    assert "every stage is up to date" in repro().stdout
    (project / "knob.txt").write_text("2")
    again = repro()
    lines = stage_lines(again.stdout)
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == ["second@x", "second@y"]
    assert lines[0].startswith("[facevae] stage 1 of 2: second@x, usually") and "left" in lines[0]
    assert (project / "b-x.txt").read_text() == "a2"


def test_a_failing_stage_fails_the_run_and_records_nothing(project: Path):
    (project / "knob.txt").write_text("fail")
    done = repro()
    assert done.returncode != 0
    assert "dvc repro failed (exit" in done.stdout
    assert not (project / LOCAL_TIMES).exists()


def test_estimates_fall_back_to_the_same_kind_of_stage():
    clock = StageClock({"train@pexels": 120.0, "evaluate@pexels": 60.0}, ["train@new", "evaluate@new", "demo@new"])
    line = clock.start("train@new")
    assert "usually 2 min 00 s" in line and "(some stages never timed)" in line
    assert "about 3 min 00 s left" in line
    assert duration(59.6) == "60 s" and duration(150) == "2 min 30 s"


def test_the_shipped_times_cover_every_stage_of_the_pipeline():
    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((root / SHIPPED_TIMES).read_text())["seconds"]
    stages = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True, check=True)
    assert set(stages.stdout.split()) <= set(shipped)
