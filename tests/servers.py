"""A team's servers started for real in temp dirs: a throwaway PostgreSQL cluster (initdb + pg_ctl)
and an `mlflow server` on it. Used by tests/test_team.py; each helper skips the test, with the
reason, where what it needs is missing."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PG_USER = "facevae"  # the cluster's superuser (trust authentication, 127.0.0.1 only)

INSTALL_HINT = "apt-get install postgresql (Debian), as .ci/run does"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200; fail with the tail of the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with code {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s: {log.read_text()[-3000:]}")


def stop_group(server: subprocess.Popen, timeout_s: float = 30) -> None:
    """End a server started with start_new_session and everything it started (its process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def postgres_bin_dir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: on PATH, else Debian's /usr/lib/postgresql/N/bin
    (the newest), which the `postgresql` package does not put on PATH."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    candidates += reversed(debian)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "createdb")):
            return folder
    return None


def require_postgres() -> Path:
    folder = postgres_bin_dir()
    if folder is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
                    f"/usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's driver for postgresql:// URLs, for MLflow and Optuna)
    except ImportError:
        pytest.skip("psycopg (3) is not installed: pip install 'facevae[team]'")
    return folder


def cluster_owner() -> pwd.struct_passwd | None:
    """Who runs the cluster: initdb refuses root, so as root the `postgres` user (the Debian package
    creates it); otherwise this user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run initdb as: " + INSTALL_HINT)


@dataclass
class Postgres:
    bin_dir: Path
    root: Path
    port: int
    owner: pwd.struct_passwd | None

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A PostgreSQL tool as the cluster's owner."""
        kwargs = {} if self.owner is None else {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.owner is not None:
            env["HOME"] = str(self.root)
        result = subprocess.run([str(self.bin_dir / command[0]), *command[1:]], capture_output=True, text=True,
                                env=env, cwd=self.root, timeout=120, **kwargs)
        if check and result.returncode != 0:
            log = self.root / "postgres.log"
            raise RuntimeError(f"{' '.join(command[:2])} failed ({result.returncode}): {result.stdout}{result.stderr}"
                               + (log.read_text()[-2000:] if log.is_file() else ""))
        return result

    def create_database(self, name: str) -> str:
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name)
        return self.url(name)


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb a cluster in a new temp dir (owned by the cluster's owner: pytest's own temp dirs are
    private to this user), start it on a free port on 127.0.0.1 with its socket in that dir; stop
    it and delete the dir on exit."""
    bin_dir = require_postgres()
    owner = cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="facevae-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Postgres(bin_dir, root, free_port(), owner)
    started = False
    try:
        cluster.run("initdb", "-D", str(root / "data"), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-locale",
                    "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={cluster.port} -c unix_socket_directories={root} "
                   "-c fsync=off -c max_connections=200")
        cluster.run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "postgres.log"), "-o", options, "-w",
                    "-t", "60", "start")
        started = True
        yield cluster
    finally:
        if started:
            cluster.run("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path  # --artifacts-destination: where the server keeps the files it is sent
    log: Path


@contextmanager
def mlflow_server(backend_uri: str, root: Path, timeout: float = 180) -> Iterator[MlflowServer]:
    """`mlflow server` on a free 127.0.0.1 port with `backend_uri` as its store; artifacts are sent
    through the server (--serve-artifacts, the default) into root/artifacts."""
    artifacts, log = root / "artifacts", root / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_cli) if mlflow_cli.is_file() else "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/health", process, log, timeout)
        yield MlflowServer(url, artifacts, log)
    finally:
        stop_group(process)
