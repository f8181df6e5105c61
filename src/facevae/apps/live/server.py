"""`facevae live`: the browser page and its WebSocket, on FastAPI/uvicorn.

Protocol on `/ws?model=URI` (URI: anything `facevae reconstruct --model` takes; default the server's):

- the server opens with `{"type": "hello", ...}` (the model, mode, limits), or with
  `{"type": "error", "message": ...}` and a close when that model fails to load;
- the page sends camera frames as binary JPEG (or PNG) messages, at most `MAX_FRAME_BYTES`, and
  `{"type": "neutral"}` to take the driver's neutral face again;
- every binary message gets exactly one answer, in order: `{"type": "frame", "seq": n, "actor":
  <PNG data URL>, "state", "faces", "beyond", "server_ms", ...}` or, when a newer frame arrived
  before it was processed, `{"type": "skipped", "seq": n}`. The latest frame wins: at most one frame
  waits, so nothing queues up however slow the client's network or the server's CPU.

With `--input CLIP` the server plays the clip at its own frame rate through the same driver (frames
it cannot keep up with are skipped, as a camera's would be) and each answer also carries the
driver's frame (`"driver"`); the page then shows the clip instead of asking for the camera.
A malformed or oversized message closes that connection with a reason (1003 / 1009); one
client's faults never touch another's session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse

from facevae.apps.live.driver import LiveDriver, LiveFrame
from facevae.core.config import Params
from facevae.core.errors import FaceVAEError
from facevae.data.video import iter_frames, probe
from facevae.tracking.models import load_actor_model, model_choices
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import check_mode, default_mode

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20  # a 640 px JPEG is ~30-80 KB; anything near a megabyte is not a camera frame
MAX_FRAME_SIDE = 1920  # larger frames are refused; frames wider than SEND_WIDTH are scaled down first
SEND_WIDTH = 640  # the page sends frames at most this wide (detection runs at extract.detect_width anyway)
DRIVER_WIDTH = 480  # --input: the driver frames sent back to the page

CLOSE_UNSUPPORTED = 1003  # RFC 6455: data the endpoint cannot accept
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_LATER = 1013


class BadFrame(ValueError):
    """A client message that is not a frame the server can use; closes that connection."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class LiveSettings:
    """What `facevae live` serves: the default model, params, and the optional clip to play."""

    model: str
    params: Params
    mode: str | None = None  # None: transfer.mode where the model can run it (default_mode)
    input: Path | None = None
    max_clients: int = 2


@dataclass
class ModelCache:
    """Models by URI, loaded once; a failure is remembered with its message (the page shows it)."""

    params: Params
    loaded: dict[str, ActorModel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def get(self, uri: str) -> ActorModel:
        if uri in self.failed:
            raise FaceVAEError(self.failed[uri])
        if uri not in self.loaded:
            try:
                self.loaded[uri] = load_actor_model(uri, self.params)
            except FaceVAEError as exc:
                self.failed[uri] = f"model {uri!r} failed to load: {exc}"
                raise FaceVAEError(self.failed[uri]) from None
        return self.loaded[uri]


# ---- frames in and out -------------------------------------------------------------------------


def check_frame_size(data: bytes) -> None:
    if len(data) > MAX_FRAME_BYTES:
        raise BadFrame(CLOSE_TOO_BIG, f"a frame of {len(data)} bytes is over the {MAX_FRAME_BYTES} byte limit")


def decode_frame(data: bytes) -> np.ndarray:
    """A client's JPEG/PNG message -> RGB, at most SEND_WIDTH wide."""
    check_frame_size(data)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise BadFrame(CLOSE_UNSUPPORTED, f"a binary message of {len(data)} bytes that is not a JPEG or PNG image")
    height, width = bgr.shape[:2]
    if max(height, width) > MAX_FRAME_SIDE:
        raise BadFrame(CLOSE_TOO_BIG, f"a {width}x{height} frame: send at most {SEND_WIDTH} px wide")
    return cv2.cvtColor(fit_width(bgr, SEND_WIDTH), cv2.COLOR_BGR2RGB)


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    if image.shape[1] <= width:
        return image
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def data_url(rgb: np.ndarray, fmt: str = ".png") -> str:
    ok, encoded = cv2.imencode(fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    mime = "image/png" if fmt == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(encoded.tobytes()).decode('ascii')}"


def frame_message(seq: int, result: LiveFrame, started: float, window: int) -> dict:
    return {
        "type": "frame", "seq": seq, "actor": data_url(result.actor), "state": result.state,
        "faces": result.faces, "neutral": round(result.neutral_progress, 3), "neutral_window": window,
        "beyond": result.beyond, "footage_distance": result.footage_distance, "detected": result.detected,
        "server_ms": round(1000 * (time.perf_counter() - started), 2),
    }  # fmt: skip


def parse_command(text: str) -> str:
    try:
        command = json.loads(text)
    except json.JSONDecodeError:
        raise BadFrame(CLOSE_UNSUPPORTED, "a text message that is not JSON") from None
    if not isinstance(command, dict) or command.get("type") not in {"neutral"}:
        raise BadFrame(CLOSE_UNSUPPORTED, f"unknown command {text[:80]!r}: the only command is {{\"type\": \"neutral\"}}")
    return command["type"]


# ---- one connection --------------------------------------------------------------------------


class Mailbox:
    """One slot: a newer frame replaces the waiting one (whose number `put` returns)."""

    def __init__(self):
        self.item: tuple[int, bytes, float] | None = None
        self.ready = asyncio.Event()

    def put(self, item: tuple[int, bytes, float]) -> int | None:
        replaced = self.item[0] if self.item is not None else None
        self.item = item
        self.ready.set()
        return replaced

    async def take(self) -> tuple[int, bytes, float]:
        await self.ready.wait()
        self.ready.clear()
        item, self.item = self.item, None
        return item


class Connection:
    """One page: its own LiveDriver (tracker, neutral, smoother) and one worker thread for it."""

    def __init__(self, websocket: WebSocket, driver: LiveDriver):
        self.websocket, self.driver = websocket, driver
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facevae-live")
        self.send_lock = asyncio.Lock()
        self.neutral_requested = False

    async def send(self, message: dict) -> None:
        async with self.send_lock:
            await self.websocket.send_text(json.dumps(message))

    async def run_in_worker(self, func: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, func, *args)

    def drive(self, rgb: np.ndarray) -> LiveFrame:
        if self.neutral_requested:
            self.neutral_requested = False
            self.driver.set_neutral()
        return self.driver(rgb)

    def drive_bytes(self, data: bytes) -> LiveFrame:
        return self.drive(decode_frame(data))

    async def receive_camera(self, mailbox: Mailbox | None) -> None:
        """Client messages until it leaves: frames into the mailbox, commands applied."""
        seq = 0
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is not None:
                parse_command(message["text"])
                self.neutral_requested = True
                continue
            if mailbox is None:
                raise BadFrame(CLOSE_UNSUPPORTED, "this server plays its --input clip: it takes no camera frames")
            data = message.get("bytes") or b""
            check_frame_size(data)  # refused before it waits in the mailbox
            replaced = mailbox.put((seq, data, time.perf_counter()))
            if replaced is not None:
                await self.send({"type": "skipped", "seq": replaced})
            seq += 1

    async def answer_camera(self, mailbox: Mailbox) -> None:
        while True:
            seq, data, received = await mailbox.take()
            result = await self.run_in_worker(self.drive_bytes, data)
            await self.send(frame_message(seq, result, received, self.driver.window))

    async def play_clip(self, clip: Path) -> None:
        """The clip at its own frame rate, over and over; frames that fall behind are skipped."""
        fps = probe(clip).fps or 25.0
        seq = 0
        while True:
            frames = iter_frames(clip)
            start = time.perf_counter()
            while (item := await self.run_in_worker(next, frames, None)) is not None:
                index, _, rgb = item
                due = start + index / fps
                late = time.perf_counter() - due
                if late > 1 / fps:
                    continue
                await asyncio.sleep(max(0.0, -late))
                received = time.perf_counter()
                result = await self.run_in_worker(self.drive, fit_width(rgb, SEND_WIDTH))
                message = frame_message(seq, result, received, self.driver.window)
                message["driver"] = data_url(fit_width(rgb, DRIVER_WIDTH), ".jpg")
                await self.send(message)
                seq += 1

    async def serve(self, clip: Path | None) -> None:
        mailbox = None if clip is not None else Mailbox()
        tasks = [asyncio.create_task(self.receive_camera(mailbox))]
        tasks.append(asyncio.create_task(self.play_clip(clip) if clip is not None else self.answer_camera(mailbox)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.worker.shutdown(wait=False, cancel_futures=True)


# ---- the app ----------------------------------------------------------------------------------


def page_html() -> str:
    return resources.files("facevae.apps.live").joinpath("page.html").read_text(encoding="utf-8")


def hello(uri: str, model: ActorModel, mode: str, clip: Path | None, window: int, clients: int) -> dict:
    return {
        "type": "hello", "model": uri, "describe": model.describe(), "mode": mode,
        "source": f"file:{clip.name}" if clip is not None else "camera", "max_bytes": MAX_FRAME_BYTES,
        "max_width": SEND_WIDTH, "neutral_window": window, "clients": clients,
    }  # fmt: skip


def create_app(settings: LiveSettings, models: ModelCache | None = None) -> FastAPI:
    """The page (`/`), the registry's models (`/api/models`) and the driving socket (`/ws`)."""
    app = FastAPI(title="facevae live", docs_url=None, redoc_url=None)
    models = models or ModelCache(settings.params)
    state = {"clients": 0}
    tracking_uri = settings.params.mlflow.resolved_tracking_uri()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page_html()

    @app.get("/api/models")
    def list_models() -> JSONResponse:
        return JSONResponse({"default": settings.model, "models": model_choices(tracking_uri)})

    @app.websocket("/ws")
    async def drive(websocket: WebSocket) -> None:
        await websocket.accept()
        if state["clients"] >= settings.max_clients:
            await refuse(websocket, CLOSE_TRY_LATER, f"the server drives at most {settings.max_clients} "
                         "pages at once (facevae live --max-clients): close another tab and reload")
            return
        state["clients"] += 1
        try:
            await drive_connection(websocket, settings, models, state)
        finally:
            state["clients"] -= 1

    return app


async def refuse(websocket: WebSocket, code: int, message: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "message": message}))
    await websocket.close(code, message[:120])


async def drive_connection(websocket: WebSocket, settings: LiveSettings, models: ModelCache, state: dict) -> None:
    uri = websocket.query_params.get("model") or settings.model
    try:
        model = await asyncio.get_running_loop().run_in_executor(None, models.get, uri)
        mode = check_mode(settings.mode) if settings.mode else default_mode(model, settings.params.transfer)
        driver = LiveDriver(model, settings.params.extract, settings.params.transfer, mode)
    except FaceVAEError as exc:
        await refuse(websocket, CLOSE_SERVER_ERROR, str(exc))
        return
    connection = Connection(websocket, driver)
    await connection.send(hello(uri, model, mode, settings.input, driver.window, state["clients"]))
    try:
        await connection.serve(settings.input)
    except WebSocketDisconnect:
        log.info("a page left (%s)", uri)
    except BadFrame as exc:
        log.warning("closing a connection: %s", exc.reason)
        await connection.send({"type": "error", "message": exc.reason})
        await websocket.close(exc.code, exc.reason[:120])
    except FaceVAEError as exc:  # the --input clip became unreadable
        await refuse(websocket, CLOSE_SERVER_ERROR, str(exc))


# ---- serving ----------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a clear error and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # No Nagle (accepted connections inherit it on Linux): an answer written in two parts would otherwise wait
    # for the page's delayed ACK, i.e. its next frame: round trip 34 ms instead of 11 (bench/live.py at 30/s).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FaceVAEError(f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port") from None
    sock.listen()  # pages opened before uvicorn starts wait in the backlog instead of being refused
    return sock


def page_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(app: FastAPI, sock: socket.socket) -> None:
    config = uvicorn.Config(
        app, log_level="warning", ws_max_size=4 * MAX_FRAME_BYTES, ws_per_message_deflate=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])
