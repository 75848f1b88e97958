"""Tar shards in object storage: ``s3://``, ``gs://`` and ``https://`` URLs, read through fsspec.

Nothing is downloaded whole. Listing opens a shard as a file that fetches 64 KiB byte ranges as
``tarfile`` reads its headers (it seeks over member data); training reads each video member with
one ranged request (``read_range``). Credentials are the protocol package's own: the environment
and config files the cloud SDKs read (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...). The packages come with ``pip install 'kvideo[remote]'``.

**A lost connection.** A read is retried with doubling pauses (0.5 s, 1 s, 2 s, ... at most 8 s)
for ``data.remote_retry_s`` seconds, then its sample is counted as ``unreadable``. So that a
store that is down costs one such wait, not one per sample, the process then takes the store
(protocol and host) for down for as long again: reads in that time try once, without pauses.
The protocol's own client is told to give up quickly (S3: 5 s to connect, 10 s to read, no
retries of its own), so each try is bounded.

Tested against a local S3-compatible server (moto's); ``gs://`` and ``https://`` take the same code
through their fsspec packages and are untested here.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kvideo.config.data import is_url
from kvideo.decode.errors import DecodeError

__all__ = ["filesystem", "is_url", "object_stamps", "read_range"]

REMOTE_EXTRA = "kvideo[remote]"
# The package fsspec needs for each protocol kvideo documents.
PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
# What listing fetches at a time: a few headers, never much of a video member.
LISTING_BLOCK = 64 << 10
FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.5, 8.0
# S3's client (botocore) bounds: one try per call, each bounded; our loop does the retrying.
S3_CLIENT = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}}

# The environment variables a store's client reads its endpoint and credentials from.
CREDENTIALS = ("AWS_", "GOOGLE_", "GCS", "FSSPEC_")

_down_until: dict[str, float] = {}  # store -> monotonic time until which it is taken for down
_filesystems: dict[tuple[Any, ...], Any] = {}  # (protocol, process, credentials) -> filesystem


def protocol(url: str) -> str:
    """``s3`` of ``s3://bucket/key``."""
    return url.partition("://")[0].lower()


def filesystem(url: str, field: str = "video.data_root") -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; a missing protocol package is one
    line naming the package to install (``field`` names the setting in it).

    One filesystem per protocol, process and credential environment: fsspec's own instance cache
    would keep a client made for other ``AWS_*`` settings, and a forked worker must not reuse its
    parent's connections."""
    scheme = protocol(url)
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"{field}={url!r}: reading {scheme}:// needs pip install '{REMOTE_EXTRA}'") from None
    key = (
        scheme,
        os.getpid(),
        tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(CREDENTIALS))),
    )
    fs = _filesystems.get(key)
    if fs is None:
        fs = _new_filesystem(fsspec, url, scheme, field)
        _filesystems[key] = fs
    return fs, fs._strip_protocol(url)


def _new_filesystem(fsspec: Any, url: str, scheme: str, field: str) -> Any:
    options: dict[str, Any] = {"config_kwargs": S3_CLIENT} if PROTOCOL_PACKAGES.get(scheme) == "s3fs" else {}
    try:
        fs = fsspec.filesystem(scheme, skip_instance_cache=True, **options)
    except ImportError:
        package = PROTOCOL_PACKAGES.get(scheme)
        if package is None:  # fsspec says which package: "Install adlfs to access Azure ..."
            from fsspec.registry import known_implementations

            known = known_implementations.get(scheme, {})
            package = str(known.get("err", f"the fsspec package for {scheme}://")).removeprefix("Install ")
            package = package.split(" to access")[0]
            raise ValueError(
                f"{field}={url!r}: reading {scheme}:// needs {package} (pip install {package})"
            ) from None
        raise ValueError(
            f"{field}={url!r}: reading {scheme}:// needs {package}; "
            f"install it with pip install '{REMOTE_EXTRA}'"
        ) from None
    except ValueError as e:  # fsspec: "Protocol not known"
        raise ValueError(f"{field}={url!r}: {e}") from None
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs's own retry loop (up to 5 tries with pauses) would outlast ours
    return fs


def _store(url: str) -> str:
    """What one outage takes down: the protocol and the host (bucket)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def read_range(url: str, offset: int, size: int, *, retry_s: float, name: str) -> bytes:
    """``size`` bytes of the object ``url`` from ``offset``, retried as the module docstring says;
    ``DecodeError`` (``missing``, ``permission``, ``unreadable``) naming the sample ``name``."""
    store = _store(url)
    fs, path = filesystem(url)
    deadline = time.monotonic() + (0.0 if _down_until.get(store, 0.0) > time.monotonic() else retry_s)
    pause, tries = FIRST_PAUSE_S, 0
    while True:
        tries += 1
        try:
            data: bytes = fs.cat_file(path, start=offset, end=offset + size)
            _down_until.pop(store, None)
            return data
        except FileNotFoundError:
            raise DecodeError("missing", name, f"{url} is gone") from None
        except PermissionError as e:
            raise DecodeError("permission", name, f"{url}: {e}") from None
        except Exception as e:  # each client has its own connection errors (aiohttp, botocore)
            if time.monotonic() + pause > deadline:
                _down_until[store] = time.monotonic() + retry_s
                detail = f"reading {url} failed {tries} time(s): {type(e).__name__}: {e}"
                raise DecodeError("unreadable", name, detail) from None
            time.sleep(pause)
            pause = min(2 * pause, LONGEST_PAUSE_S)


def object_stamps(fs: Any, paths: list[str]) -> dict[str, tuple[int, str]]:
    """``{path: (size, ETag or mtime)}`` of objects, one listing request per folder rather than
    one per object: what a shard's cached listing is keyed by."""
    stamps: dict[str, tuple[int, str]] = {}
    for folder in dict.fromkeys(path.rsplit("/", 1)[0] for path in paths):
        for entry in fs.ls(folder, detail=True):
            stamps[entry["name"].rstrip("/")] = _stamp(entry)
    missing = [path for path in paths if path not in stamps]
    for path in missing:
        stamps[path] = _stamp(fs.info(path))
    return stamps


def _stamp(entry: dict[str, Any]) -> tuple[int, str]:
    version = entry.get("ETag") or entry.get("etag") or entry.get("mtime") or entry.get("LastModified") or ""
    return int(entry.get("size") or 0), str(version).strip('"')
