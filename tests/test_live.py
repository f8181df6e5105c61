"""`facevae live`: the frame-by-frame driver, and the real server (a `facevae live` subprocess) over
real WebSockets: answers in order, the latest frame wins, and each fault closes only its connection."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from facevae.apps.live.driver import LiveDriver
from facevae.apps.live.server import MAX_FRAME_BYTES
from facevae.core.config import ExtractConfig, TransferConfig
from facevae.transfer.drive import default_mode
from tests.liveserver import LiveServer, start_live
from tests.media import astronaut_frames, coffee_frames, write_clip

WINDOW = 4  # transfer.neutral_window for these tests: a few frames, not two seconds


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def actor_pixels(message: dict) -> np.ndarray:
    encoded = message["actor"].split(",", 1)[1]
    return cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)


def receive(ws) -> dict:
    return json.loads(ws.recv(timeout=60))


def transfer_cfg() -> TransferConfig:
    return TransferConfig(neutral_window=WINDOW)


# ---- the driver ----------------------------------------------------------------------------


def test_driver_takes_the_neutral_then_drives_and_holds_without_a_face(model):
    driver = LiveDriver(model, ExtractConfig(), transfer_cfg(), default_mode(model, transfer_cfg()))
    faces = astronaut_frames(WINDOW + 3)
    results = [driver(rgb) for rgb in faces]
    assert [r.state for r in results] == ["neutral"] * (WINDOW - 1) + ["driving"] * 4
    assert [r.neutral_progress for r in results[: WINDOW - 1]] == [(i + 1) / WINDOW for i in range(WINDOW - 1)]
    driven = results[-1].actor
    assert driven.shape == (model.image_size, model.image_size, 3)
    assert not np.array_equal(driven, results[0].actor)  # the actor's neutral frame until then
    held = driver(coffee_frames(1)[0])
    assert held.state == "no-face" and held.faces == 0
    assert np.array_equal(held.actor, driven)
    driver.set_neutral()
    assert driver(faces[0]).state == "neutral"


def test_driver_keeps_only_the_latest_footage_distance(model):
    driver = LiveDriver(model, ExtractConfig(), transfer_cfg(), default_mode(model, transfer_cfg()))
    for rgb in astronaut_frames(WINDOW + 5):
        driver(rgb)
    assert len(driver.session.distances) <= 1  # a live session runs for hours: no per-frame history


# ---- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny) -> LiveServer:
    live = start_live(["--model", "pexels", "--set", f"transfer.neutral_window={WINDOW}"],
                      env=tiny.env())
    yield live
    live.stop()


def test_page_and_model_list(server, tiny):
    page = server.get("").decode()
    assert "getUserMedia" in page and "<title>facevae live</title>" in page
    listing = json.loads(server.get("api/models"))
    assert listing["default"] == "pexels"
    uris = [choice["uri"] for choice in listing["models"]]
    assert "models:/facevae-pexels@champion" in uris and "models:/facevae-pexels/1" in uris


def test_every_frame_is_answered_in_order_and_the_actor_moves(server):
    frames = astronaut_frames(WINDOW + 8)
    with connect(server.ws_url, max_size=None) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello" and hello["source"] == "camera" and hello["neutral_window"] == WINDOW
        answers = []
        for rgb in frames:  # one at a time: nothing can be superseded
            ws.send(jpeg(rgb))
            answers.append(receive(ws))
    assert [a["type"] for a in answers] == ["frame"] * len(frames)
    assert [a["seq"] for a in answers] == list(range(len(frames)))
    assert [a["state"] for a in answers][WINDOW - 1 :] == ["driving"] * (len(frames) - WINDOW + 1)
    driven = [actor_pixels(a) for a in answers[WINDOW - 1 :]]
    assert driven[0].shape[:2] == (64, 64)
    assert any(not np.array_equal(driven[0], d) for d in driven[1:])
    assert all(a["server_ms"] > 0 for a in answers)


def test_a_burst_is_answered_once_per_frame_and_the_latest_wins(server):
    frames = astronaut_frames(20)
    with connect(server.ws_url, max_size=None) as ws:
        receive(ws)
        for rgb in frames:
            ws.send(jpeg(rgb))
        answers = [receive(ws) for _ in frames]
    assert sorted(a["seq"] for a in answers) == list(range(len(frames)))  # one answer each
    processed = [a["seq"] for a in answers if a["type"] == "frame"]
    assert processed == sorted(processed) and processed[-1] == len(frames) - 1  # the last frame always drives
    assert len(processed) < len(frames)  # frames sent faster than driven were skipped, not queued


def test_no_face_says_so_and_holds(server):
    with connect(server.ws_url, max_size=None) as ws:
        receive(ws)
        ws.send(jpeg(coffee_frames(1)[0]))
        answer = receive(ws)
    assert answer["state"] == "no-face" and answer["faces"] == 0


def test_set_neutral_starts_the_neutral_window_again(server):
    frames = astronaut_frames(WINDOW + 2)
    with connect(server.ws_url, max_size=None) as ws:
        receive(ws)
        for rgb in frames:
            ws.send(jpeg(rgb))
            receive(ws)
        ws.send(json.dumps({"type": "neutral"}))
        ws.send(jpeg(frames[0]))
        assert receive(ws)["state"] == "neutral"


@pytest.mark.parametrize(
    "message, code, reason",
    [
        (b"not an image at all", 1003, "not a JPEG or PNG"),
        (b"\xff" * (MAX_FRAME_BYTES + 1), 1009, "byte limit"),
        ('{"type": "explode"}', 1003, "unknown command"),
        ("not json", 1003, "not JSON"),
    ],
)
def test_a_bad_message_closes_that_connection_with_a_reason_and_the_server_goes_on(server, message, code, reason):
    with connect(server.ws_url, max_size=None) as ws:
        receive(ws)
        ws.send(message)
        error = receive(ws)
        with pytest.raises(ConnectionClosed):
            receive(ws)
    assert error["type"] == "error" and reason in error["message"]
    assert ws.close_code == code and reason in ws.close_reason
    with connect(server.ws_url, max_size=None) as ws:  # the next page is served
        receive(ws)
        ws.send(jpeg(astronaut_frames(1)[0]))
        assert receive(ws)["type"] == "frame"


def test_a_page_that_leaves_mid_frame_leaves_the_server_serving(server):
    for _ in range(3):
        with connect(server.ws_url, max_size=None) as ws:
            receive(ws)
            ws.send(jpeg(astronaut_frames(1)[0]))
        # closed by leaving the block, before its answer
    with connect(server.ws_url, max_size=None) as ws:
        assert receive(ws)["clients"] == 1  # the three that left are no longer counted
        ws.send(jpeg(astronaut_frames(1)[0]))
        assert receive(ws)["type"] == "frame"
    assert server.alive()


def test_two_pages_are_served_and_a_third_is_told_to_try_later(server):
    with connect(server.ws_url, max_size=None) as one, connect(server.ws_url, max_size=None) as two:
        receive(one), receive(two)
        with connect(server.ws_url, max_size=None) as three:
            error = receive(three)
            with pytest.raises(ConnectionClosed):
                receive(three)
        assert "at most 2" in error["message"] and three.close_code == 1013
        for ws in (one, two):
            ws.send(jpeg(astronaut_frames(1)[0]))
            assert receive(ws)["type"] == "frame"


def test_a_model_that_fails_to_load_is_named_on_the_page(server):
    with connect(server.ws_url + "?model=models:/facevae-nobody@champion", max_size=None) as ws:
        error = receive(ws)
        with pytest.raises(ConnectionClosed):
            receive(ws)
    assert error["type"] == "error" and "facevae-nobody" in error["message"] and ws.close_code == 1011


def test_a_clip_plays_through_the_same_path(tiny, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", astronaut_frames(WINDOW + 6), fps=10)
    live = start_live(["--model", str(tiny.model_path), "--input", str(clip), "--set", f"transfer.neutral_window={WINDOW}"])
    try:
        with connect(live.ws_url, max_size=None) as ws:
            hello = receive(ws)
            answers = [receive(ws) for _ in range(WINDOW + 2)]
            ws.send(jpeg(astronaut_frames(1)[0]))
            error = receive(ws)
    finally:
        live.stop()
    assert hello["source"] == "file:clip.mp4"
    assert all(a["type"] == "frame" and a["driver"].startswith("data:image/jpeg") for a in answers)
    assert answers[-1]["state"] == "driving"
    assert "takes no camera frames" in error["message"]


def test_bad_arguments_are_one_line_errors(tiny, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "facevae.cli", "live", "--port", "0", *args],
                              capture_output=True, text=True, env=tiny.env(), timeout=120)

    missing = run("--model", str(tmp_path / "none.pt"))
    assert missing.returncode == 1 and "none.pt" in missing.stderr and "Traceback" not in missing.stderr
    bad_clip = tmp_path / "clip.mp4"
    bad_clip.write_bytes(b"not a video")
    clip = run("--model", str(tiny.model_path), "--input", str(bad_clip))
    assert clip.returncode == 1 and "clip.mp4" in clip.stderr and "Traceback" not in clip.stderr


def test_a_taken_port_is_a_one_line_error(tiny):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "facevae.cli", "live", "--model", str(tiny.model_path),
                               "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
