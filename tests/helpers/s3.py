"""A real S3-compatible server for the object-storage tests: moto's standalone server, started as
its own process on loopback, with the credentials the cloud SDKs read from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server:
    """The server process and the environment a client needs to reach it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def stop(self) -> None:
        """Stop the server (a store that goes away mid-epoch)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def upload(self, local: Path, bucket: str) -> str:
        """Copy the folder ``local`` into ``bucket`` (made here); returns ``s3://bucket``."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket=bucket)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, path.relative_to(local).as_posix())
        return f"s3://{bucket}"


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A fresh moto server on 127.0.0.1, stopped after the block."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    server = S3Server(process, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        yield server
    finally:
        server.stop()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the block (in-process training reads it)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
