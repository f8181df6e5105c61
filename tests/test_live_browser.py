"""The live page in a real browser: headless Chromium with a fake camera fed a y4m clip, driving a real
`facevae live` server. Skipped, with the reason, where Chromium or Playwright is missing (`.ci/run`
installs Debian's chromium; Playwright drives it and never downloads a browser of its own)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.liveserver import LiveServer, start_live, write_y4m
from tests.media import astronaut_frames, coffee_frames

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM = os.environ.get("FACEVAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium, or set FACEVAE_CHROMIUM)"),
]

WINDOW = 8  # transfer.neutral_window: a short neutral so the test sees driving within a second


@pytest.fixture(scope="module")
def server(tiny) -> LiveServer:
    live = start_live(["--model", "pexels", "--set", f"transfer.neutral_window={WINDOW}"], env=tiny.env())
    yield live
    live.stop()


def handheld(frames: list) -> list:
    """The clip forwards then backwards, so Chromium's looping fake camera never jumps."""
    return frames + frames[-2:0:-1]


def open_browser(pw, clip):
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={clip}"],
    )  # fmt: skip


def watch_console(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def stats(page) -> dict:
    return page.evaluate("() => ({...window.facevaeStats, actor: document.getElementById('actor').src})")


def test_the_camera_drives_the_actor_in_the_page(server, tmp_path):
    clip = write_y4m(handheld(astronaut_frames(30)), tmp_path / "face.y4m", fps=30)
    with playwright.sync_playwright() as pw:
        browser = open_browser(pw, clip)
        page = browser.new_page(viewport={"width": 900, "height": 560})
        problems = watch_console(page)
        page.goto(server.url)
        page.wait_for_function("() => window.facevaeStats.hello !== null", timeout=60_000)
        page.wait_for_function(f"() => window.facevaeStats.frames >= {WINDOW + 10}", timeout=60_000)
        first = stats(page)
        page.wait_for_function(f"() => window.facevaeStats.frames >= {first['frames'] + 20}", timeout=60_000)
        page.wait_for_timeout(1500)  # a full counter window
        later = stats(page)
        fps_text = page.inner_text("#fps")
        status = page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "live.png"))
        browser.close()
    assert first["hello"]["source"] == "camera" and first["closed"] is None
    assert later["state"] == "driving" and status == "Driving"
    assert first["actor"].startswith("data:image/png") and later["actor"] != first["actor"]
    assert re.fullmatch(r"\d+\.\d frames/s", fps_text) and later["fps"] > 0
    assert later["latency"] > 0
    assert problems == []
    assert (tmp_path / "live.png").stat().st_size > 10_000


def test_no_face_and_a_page_that_leaves(server, tmp_path):
    empty = write_y4m(handheld(coffee_frames(10)), tmp_path / "empty.y4m", fps=30)
    with playwright.sync_playwright() as pw:
        browser = open_browser(pw, empty)
        page = browser.new_page()
        problems = watch_console(page)
        page.goto(server.url)
        page.wait_for_function("() => window.facevaeStats.frames >= 5", timeout=60_000)
        status = page.inner_text("#status")
        page.close()  # mid-stream: frames in flight
        second = browser.new_page()
        second.goto(server.url)
        second.wait_for_function("() => window.facevaeStats.frames >= 5", timeout=60_000)
        hello = second.evaluate("() => window.facevaeStats.hello")
        browser.close()
    assert status.startswith("No face in view")
    assert hello["clients"] == 1  # the page that left is no longer counted
    assert problems == []
    assert server.alive()
