"""Whether this machine can decode with NVDEC through PyNvVideoCodec (``video/decoder=nvdec``),
asked before a run starts so that a machine without it is refused in one line, not at the first
batch with a loader error.

What PyNvVideoCodec needs at run time is the driver's, not a package's: ``libnvcuvid.so.1``
(NVDEC) and ``libnvidia-encode.so.1`` (``import PyNvVideoCodec`` loads it even to decode). A
container gets them only with the ``video`` driver capability (``NVIDIA_DRIVER_CAPABILITIES``
holding ``video``, or ``all``). Torch-free and light: ``ctypes`` and ``importlib`` only.
"""

from __future__ import annotations

import ctypes
import importlib.util

DRIVER_LIBRARIES = ("libnvcuvid.so.1", "libnvidia-encode.so.1")
ALTERNATIVES = (
    "use video/decoder=pyav_cpu or decord_cpu (CPU decode workers), or decord_gpu with a decord "
    "built with CUDA"
)


def nvdec_missing() -> str | None:
    """What this machine lacks for NVDEC decoding, in words, or None when nothing is missing."""
    for library in DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(library)
        except OSError:
            return (
                f"the NVIDIA driver's {library} cannot be loaded (no NVIDIA driver here, or a "
                "container started without the 'video' driver capability: set "
                "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video)"
            )
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return "PyNvVideoCodec is not installed (pip install 'kvideo[gpu]')"
    return None


def require_nvdec() -> None:
    """Raise ``RuntimeError`` in one line naming what is missing and the alternatives."""
    missing = nvdec_missing()
    if missing:
        raise RuntimeError(f"video/decoder=nvdec cannot run on this machine: {missing}; {ALTERNATIVES}")
