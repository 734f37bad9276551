"""A real S3 endpoint for tests: ``moto_server`` as a subprocess on loopback.

Usage in a test module::

    from support.s3 import moto_s3  # noqa: F401  (the session fixture)

    def test_x(moto_s3):
        store = open_store(moto_s3.new_store_url())   # a fresh prefix per call

The fixture sets the standard AWS variables plus ``TASKSWAP_S3_ENDPOINT_URL`` for this
process (restored afterwards); ``moto_s3.env`` holds the same for server subprocesses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUCKET = "taskswap-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoS3:
    endpoint: str
    bucket: str
    process: subprocess.Popen
    env: dict = field(default_factory=dict)

    def new_store_url(self, label: str = "store") -> str:
        """``s3://bucket/<label>-<uuid>``: an empty store no other test sees."""
        return f"s3://{self.bucket}/{label}-{uuid.uuid4().hex[:10]}"

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def _moto_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto(log_path: Path, timeout_s: float = 30.0) -> MotoS3:
    """Start moto on a free loopback port, wait until it answers, create the bucket."""
    import boto3
    import botocore

    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(_moto_command(port), stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)  # plain create: no location constraint for us-east-1
            break
        except botocore.exceptions.EndpointConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start; see {log_path}")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "TASKSWAP_S3_ENDPOINT_URL": endpoint}
    return MotoS3(endpoint, BUCKET, proc, env)


def stop_moto(server: MotoS3) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A moto S3 server for the whole session, with this process's env pointed at it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_moto(server)
