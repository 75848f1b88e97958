"""Reading a DCP checkpoint folder without running code from it.

A run dir is data a user may have been sent or downloaded, and torch's DCP reader trusts it in
two places: ``FileSystemReader.read_metadata`` reads the folder's ``.metadata`` with plain
``pickle.load``, and ``DefaultLoadPlanner.load_bytes`` reads every non-tensor entry (the
optimizer's hyperparameters) with ``torch.load(weights_only=False)``. Either runs whatever a
planted file asks for, in ``kvideo.caption``, ``kvideo.export``, ``eval.py``, a resume or
``trainer.init_from``.

Here the index is unpickled by ``IndexUnpickler``, which builds only what a DCP index is made of
(the classes of ``torch.distributed.checkpoint.metadata``, torch's sizes, dtypes and layouts, a
path); anything else is refused in one line naming the file. The non-tensor entries are read
with ``weights_only=True``, which takes the numbers, strings, tuples and lists an optimizer's
``param_groups`` hold. Tensors were already read with ``weights_only=True`` by torch.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

from kvideo.errors import first_line
from kvideo.train.checkpoint import CheckpointError

# What a DCP index holds besides the classes of torch.distributed.checkpoint.metadata and
# torch's dtypes: tensor sizes, layouts (by name), where each item is stored, and a path.
INDEX_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}


class IndexUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals a DCP index is made of."""

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in INDEX_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        defined = getattr(dcp_metadata, name, None) if module == dcp_metadata.__name__ else None
        if isinstance(defined, type) and defined.__module__ == module:  # not what it imports
            return defined
        raise CheckpointError(
            f"{self.path}: refused: it asks for {module}.{name}, which no DCP checkpoint index holds "
            "(unpickling it could run code from the file)"
        )


def read_index(stream: Any, path: str) -> dcp_metadata.Metadata:
    """The ``Metadata`` pickled in ``stream`` (a DCP folder's ``.metadata``), or a
    ``CheckpointError`` naming ``path``."""
    try:
        index = IndexUnpickler(stream, path).load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated or not a pickle: a damaged checkpoint
        raise CheckpointError(f"{path}: not a DCP checkpoint index ({type(e).__name__}: {e})") from None
    if not isinstance(index, dcp_metadata.Metadata):
        raise CheckpointError(f"{path}: not a DCP checkpoint index (it holds a {type(index).__name__})")
    return index


class IndexCheckingReader(FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` goes through ``IndexUnpickler``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            index = read_index(stream, str(path))
        if getattr(index, "storage_meta", None) is None:
            index.storage_meta = dcp_metadata.StorageMeta()
        assert index.storage_meta is not None
        index.storage_meta.load_id = self.load_id
        return index


class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` whose non-tensor entries are read with ``weights_only=True``
    (its ``load_bytes``, with that one change)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder  # for messages

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            loaded = torch.load(value, weights_only=True)
        except Exception as e:
            asks = re.search(r"GLOBAL ([\w.]+)", str(e))
            reason = f"it asks for {asks.group(1)}" if asks else f"{type(e).__name__}"
            raise CheckpointError(
                f"{self.folder}: entry {fqn!r} is not plain data ({reason}); refused: loading "
                "it could run code from the checkpoint"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


def saved_index(folder: Path) -> dcp_metadata.Metadata:
    """The index of the DCP checkpoint in ``folder``, unpickled by ``IndexUnpickler``."""
    return IndexCheckingReader(folder).read_metadata()


def short_rank_files(folder: Path, index: dcp_metadata.Metadata) -> list[str]:
    """The shard files ``index`` reads from that are missing from ``folder`` or end before the
    bytes it reads there (a rank's file lost, or a save cut short)."""
    ends: dict[str, int] = {}
    for info in (index.storage_data or {}).values():
        relative = str(getattr(info, "relative_path", ""))
        end = int(getattr(info, "offset", 0)) + int(getattr(info, "length", 0))
        ends[relative] = max(ends.get(relative, 0), end)
    short = []
    for relative, end in sorted(ends.items()):
        file = folder / relative
        if Path(relative).is_absolute() or ".." in Path(relative).parts or not file.is_file():
            short.append(relative)
        elif file.stat().st_size < end:
            short.append(relative)
    return short


def load_dcp(state: dict[str, Any], folder: Path, *, no_dist: bool = False) -> None:
    """``state`` filled in place from the DCP checkpoint in ``folder`` (``dcp.load``), reading
    nothing that could run code (see the module docstring)."""
    try:
        dcp_load(
            state,
            checkpoint_id=folder,
            storage_reader=IndexCheckingReader(folder),
            planner=WeightsOnlyLoadPlanner(folder),
            no_dist=no_dist,
        )
    except CheckpointException as e:  # DCP gathers each rank's error with its traceback
        errors = [failure[0] for failure in e.failures.values()]
        ours = [error for error in errors if isinstance(error, CheckpointError)]
        if ours:
            raise ours[0] from None
        first = errors[0] if errors else e
        raise CheckpointError(f"{folder}: cannot be read ({first_line(first, typed=True)})") from None
