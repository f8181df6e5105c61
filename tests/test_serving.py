"""`mlflow models serve` on the registered pyfunc: a real server, a real aligned crop over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from facevae.core.config import ExtractConfig
from facevae.extract.drivers import aligner_for, read_image
from facevae.transfer.actor import ActorModel
from tests.inferencedata import tiny_model
from tests.servers import free_port, stop_group, wait_until_ready

SERVER_START_TIMEOUT_S = 90


@pytest.mark.slow
def test_served_champion_reconstructs_an_aligned_crop(tmp_path_factory, sample_clips_dir):
    tiny = tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    model = ActorModel.from_file(tiny.model_path, ExtractConfig())
    face = aligner_for(ExtractConfig(), model.crop).align_one(read_image(sample_clips_dir / "single_face.jpg"))
    crop = face.crop

    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [*command, "models", "serve", "-m", "models:/facevae-pexels@champion", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=tiny.env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/ping", server, log, SERVER_START_TIMEOUT_S)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": [crop.tolist()]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            body = json.loads(reply.read())
    finally:
        stop_group(server)
    predictions = np.asarray(body["predictions"])
    assert predictions.shape == (1, 64, 64, 3)
    assert np.issubdtype(predictions.dtype, np.integer) and predictions.min() >= 0 and predictions.max() <= 255
    local = model.reconstruct(crop[None]).astype(int)
    assert np.abs(predictions - local).max() <= 1  # the served pyfunc is the same network
