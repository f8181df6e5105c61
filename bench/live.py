"""`facevae live` under a steady camera: a WebSocket client replays a clip at 30 frames/s.

    python bench/live.py [--model models/pexels/model.pt] [--clip data/drivers/franck.mp4] [--seconds 60]

- ours: a real `facevae live` server (subprocess, uvicorn), one client sending the clip's frames as
  640 px wide JPEGs at 30 frames/s, at most 2 unanswered (as the page does: a camera frame that
  finds 2 in flight is not sent). Measured: actor frames received per second (sustained, and the
  worst 10 s window), round-trip and server-side latency, the server's memory over the run.
- baseline: the offline path, `reconstruct_video` on the same frames (the same clip at the same
  size, written to a temp file), as a cost per frame.

Needs a trained model (`make demo`). Targets (issue 25): >= 30 frames/s sustained, server-side p95
<= 50 ms, no growth of memory (the server holds at most one waiting frame per client by design).
A second, 10 s run offers 120 frames/s: the server's ceiling, as headroom over the 30 frames/s target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from websockets.asyncio.client import connect

from facevae.apps.reconstruct import reconstruct_video
from facevae.core.config import load_params
from facevae.data.video import VideoWriter, iter_frames, probe
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import default_mode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.liveserver import start_live  # noqa: E402  (the tests' launcher: same subprocess, same port probe)

RATE = 30.0
MAX_IN_FLIGHT = 2
CAPACITY_RATE = 120.0  # a second, short run offered faster than the server can go: its ceiling


def camera_frames(clip: Path, count: int, width: int) -> list[np.ndarray]:
    """The clip's first `count` frames (looped if shorter), resized to `width` px wide."""
    frames = []
    while len(frames) < count:
        for _, _, rgb in iter_frames(clip):
            height = round(rgb.shape[0] * width / rgb.shape[1])
            frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR))
            if len(frames) == count:
                break
    return frames


def jpegs(frames: list[np.ndarray]) -> list[bytes]:
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
            for f in frames]


def baseline_ms_per_frame(model: ActorModel, frames: list[np.ndarray], params, mode: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "camera.mp4"
        with VideoWriter(clip, fps=RATE) as writer:
            for frame in frames:
                writer.write(frame)
        summary = reconstruct_video(model, clip, Path(tmp) / "out.mp4", params.extract, progress=False,
                                    mode=mode, transfer_cfg=params.transfer)
    return 1000 * summary.seconds / summary.frames


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def replay(url: str, payloads: list[bytes], pid: int, rate: float = RATE) -> dict:
    sent_at: dict[int, float] = {}
    answers: list[tuple[float, dict]] = []
    memory: list[tuple[float, float]] = []
    in_flight = 0
    async with connect(url, max_size=None, compression=None) as ws:
        json.loads(await ws.recv())  # hello

        async def receive():
            nonlocal in_flight
            async for text in ws:
                message = json.loads(text)
                answers.append((time.perf_counter(), message))
                in_flight -= 1

        reader = asyncio.create_task(receive())
        start = time.perf_counter()
        seq = not_sent = 0
        for i, payload in enumerate(payloads):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            if i % int(rate) == 0:
                memory.append((time.perf_counter() - start, rss_mb(pid)))
            if in_flight >= MAX_IN_FLIGHT:
                not_sent += 1
                continue
            sent_at[seq] = time.perf_counter()
            in_flight += 1
            seq += 1
            await ws.send(payload)
        await asyncio.sleep(1.0)
        end = start + len(payloads) / rate
        reader.cancel()
    frames = [(t, m) for t, m in answers if m["type"] == "frame"]
    return {"start": start, "end": end, "frames": frames, "sent": seq, "not_sent": not_sent,
            "skipped": sum(m["type"] == "skipped" for _, m in answers), "sent_at": sent_at, "memory": memory}


def report(run: dict, baseline_ms: float, seconds: float) -> list[str]:
    frames, start = run["frames"], run["start"]
    times = np.array([t - start for t, _ in frames])
    windows = [((times >= w) & (times < w + 10)).sum() / 10 for w in range(0, int(seconds) - 9, 10)]
    round_trip = np.array([1000 * (t - run["sent_at"][m["seq"]]) for t, m in frames])
    server = np.array([m["server_ms"] for _, m in frames])
    memory = run["memory"]
    settle = next((mb for t, mb in memory if t >= 10), memory[0][1])
    sustained = len(frames) / seconds
    offered = run["sent"] + run["not_sent"]
    return [
        f"offered {offered} frames at "
        f"{RATE:.0f}/s for {seconds:.0f} s ({run['not_sent']} not sent: 2 already in flight); "
        f"{len(frames)} actor frames back ({100 * len(frames) / offered:.1f}%), {run['skipped']} superseded on the server",
        f"ours: sustained {sustained:.1f} frames/s (worst 10 s window {min(windows):.1f}); "
        f"round trip p50 {np.percentile(round_trip, 50):.1f} ms, p95 {np.percentile(round_trip, 95):.1f} ms; "
        f"server-side p50 {np.percentile(server, 50):.1f} ms, p95 {np.percentile(server, 95):.1f} ms",
        f"server memory: {settle:.0f} MB at 10 s, {memory[-1][1]:.0f} MB at {memory[-1][0]:.0f} s "
        f"(growth {memory[-1][1] - settle:+.0f} MB)",
        f"baseline (offline reconstruct, same frames): {baseline_ms:.1f} ms/frame = {1000 / baseline_ms:.0f} frames/s",
        f"ratio: live server p50 / offline per-frame cost = {np.percentile(server, 50) / baseline_ms:.2f}; "
        f"sustained / 30 frames/s target = {sustained / 30:.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "pexels" / "model.pt")
    parser.add_argument("--clip", type=Path, default=ROOT / "data" / "drivers" / "franck.mp4")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640, help="Camera frame width sent (the page sends at most 640).")
    args = parser.parse_args()
    if not args.model.is_file() or not args.clip.is_file():
        print(f"needs {args.model} and {args.clip}: run `make demo` first", file=sys.stderr)
        return 1
    params = load_params(ROOT / "params.yaml")
    model = ActorModel.from_file(args.model, params.extract)
    mode = default_mode(model, params.transfer)
    frames = camera_frames(args.clip, int(args.seconds * RATE), args.width)
    payloads = jpegs(frames)
    print(f"{args.clip.name} as a {frames[0].shape[1]}x{frames[0].shape[0]} camera, {len(payloads)} frames "
          f"({np.mean([len(p) for p in payloads]) / 1024:.0f} KB JPEG each); model {args.model.name}, mode {mode}")
    baseline = baseline_ms_per_frame(model, frames, params, mode)
    server = start_live(["--model", str(args.model), "--params", str(ROOT / "params.yaml")])
    try:
        run = asyncio.run(replay(server.ws_url, payloads, server.process.pid))
        capacity = asyncio.run(replay(server.ws_url, payloads[: int(10 * CAPACITY_RATE)], server.process.pid, CAPACITY_RATE))
    finally:
        server.stop()
    print("\n".join(report(run, baseline, args.seconds)))
    got = len(capacity["frames"]) / 10
    print(f"headroom: offered {CAPACITY_RATE:.0f} frames/s for 10 s, {got:.1f} actor frames/s back "
          f"({capacity['not_sent']} not sent, {capacity['skipped']} superseded): {got / RATE:.1f}x the 30 frames/s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
