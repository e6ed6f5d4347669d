"""Safetensors files read and written one tensor at a time, with errors that name the file.

`safetensors.torch.save_file` needs every tensor of a file in memory at once; `SafetensorsWriter` writes the
same format (8-byte little-endian header length, JSON header, raw little-endian data) from a header planned
in advance, so a shard of any size is produced with one tensor in memory. Only safetensors and JSON are read
here: a folder holding nothing but pickles (`pytorch_model.bin`) is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import torch
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
DTYPES: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=DTYPES[self.dtype]).element_size()


def member_path(folder: str, name, source: str, subfolders: bool = False) -> str:
    """`folder/name` for a file name read from a file's content (an index, a state file), refused unless it
    stays inside `folder`: a plain file name (or, with `subfolders`, a relative path of plain names), never
    absolute, never `..`, never a backslash or NUL. An edited index must not make us read or write elsewhere."""
    parts = name.split("/") if isinstance(name, str) else []
    bad = (
        not parts or "\\" in name or "\0" in name or os.path.isabs(name) or (len(name) > 1 and name[1] == ":")
        or any(p in ("", ".", "..") for p in parts) or (len(parts) > 1 and not subfolders)
    )
    if bad:
        rule = "a relative path of plain names inside the folder" if subfolders else "a plain file name"
        raise ValueError(f"{source}: file name {name!r} is not {rule} (no '..', no absolute path, no separators); "
                         "the file was edited or corrupted: restore it")
    return os.path.join(folder, *parts)


@contextmanager
def open_safetensors(path: str) -> Iterator:
    """`safe_open(path)`, turning a missing or unreadable file into an error that names it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    try:
        handle = safe_open(path, framework="pt")
    except Exception as err:  # safetensors raises its own SafetensorError for any malformed file
        raise ValueError(f"{path}: not a valid safetensors file (corrupt or truncated?): {err}") from None
    with handle as f:
        yield f


def read_header(path: str) -> tuple[list[TensorInfo], dict[str, str]]:
    """The tensors (in file order) and the metadata of a safetensors file, without reading any data."""
    with open_safetensors(path) as f:
        infos = []
        for name in f.keys():
            piece = f.get_slice(name)
            dtype = piece.get_dtype()
            if dtype not in DTYPES:
                raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
            infos.append(TensorInfo(name, dtype, tuple(piece.get_shape())))
        return infos, dict(f.metadata() or {})


def data_layout(path: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Where a safetensors file's tensors lie: the byte offset of its data section and, per tensor, its
    [begin, end) byte offsets inside it, so tensors can be read in pieces with `os.pread` (no mmap)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return 8 + length, {name: tuple(entry["data_offsets"]) for name, entry in header.items()}


def checkpoint_files(folder: str) -> list[str]:
    """The safetensors weight files of a `save_pretrained` folder, checked to exist before any work starts."""
    single = os.path.join(folder, SINGLE_FILE)
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{index}: not a valid safetensors index ({err})") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: weight_map must be an object of tensor name -> shard file")
        files = sorted({member_path(folder, name, index) for name in weight_map.values()})
        missing = [os.path.basename(path) for path in files if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"shard(s) {missing} listed in {index} are missing")
        return files
    if os.path.isfile(single):
        return [single]
    pickles = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json") if os.path.isfile(os.path.join(folder, n))]
    if pickles:
        raise ValueError(
            f"{folder} holds only {pickles[0]} (a pickle); smc_hf reads safetensors only. Convert it first, e.g. "
            "load it yourself and call save_pretrained(..., safe_serialization=True)."
        )
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}")


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, as safetensors stores them."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


class SafetensorsWriter:
    """Write a safetensors file whose tensors are known in advance, one tensor at a time, in any order.

    Tensors are laid out by decreasing element size (as safetensors itself does), so every tensor stays
    aligned. `close()` checks that every planned tensor was written; on error the file is removed.
    """

    def __init__(self, path: str, plan: Sequence[TensorInfo], metadata: Optional[dict[str, str]] = None):
        self.path = path
        itemsize = {info.name: torch.empty((), dtype=DTYPES[info.dtype]).element_size() for info in plan}
        order = sorted(range(len(plan)), key=lambda i: -itemsize[plan[i].name])
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        self.offsets: dict[str, tuple[int, int]] = {}
        self.plan = {info.name: info for info in plan}
        if len(self.plan) != len(plan):
            raise ValueError(f"{path}: duplicate tensor names in the plan")
        offset = 0
        for i in order:
            info = plan[i]
            header[info.name] = {"dtype": info.dtype, "shape": list(info.shape),
                                 "data_offsets": [offset, offset + info.nbytes]}
            self.offsets[info.name] = (offset, offset + info.nbytes)
            offset += info.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((-len(raw)) % 8)
        self.data_start = 8 + len(raw)
        self.size = self.data_start + offset
        self.written: set[str] = set()
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(raw)))
        self.file.write(raw)
        self.file.truncate(self.size)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        info = self.plan.get(name)
        if info is None:
            raise KeyError(f"{self.path}: tensor {name!r} is not in the planned header")
        if DTYPE_NAMES.get(tensor.dtype) != info.dtype or tuple(tensor.shape) != info.shape:
            raise ValueError(
                f"{self.path}: tensor {name!r} is {DTYPE_NAMES.get(tensor.dtype)} {tuple(tensor.shape)}, "
                f"planned {info.dtype} {info.shape}"
            )
        self.file.seek(self.data_start + self.offsets[name][0])
        self.file.write(tensor_bytes(tensor))
        self.written.add(name)

    def write_pieces(self, name: str, pieces: Iterable[torch.Tensor]) -> None:
        """Write tensor `name` from consecutive flat pieces of its dtype, so it is never whole in memory."""
        info = self.plan.get(name)
        if info is None:
            raise KeyError(f"{self.path}: tensor {name!r} is not in the planned header")
        self.file.flush()
        begin, end = self.offsets[name]
        position = self.data_start + begin
        for piece in pieces:
            if DTYPE_NAMES.get(piece.dtype) != info.dtype:
                raise ValueError(f"{self.path}: a piece of {name!r} is {DTYPE_NAMES.get(piece.dtype)}, "
                                 f"planned {info.dtype}")
            data = tensor_bytes(piece)
            while data:
                written = os.pwrite(self.file.fileno(), data, position)
                data, position = data[written:], position + written
        if position != self.data_start + end:
            raise ValueError(f"{self.path}: the pieces of {name!r} hold {position - self.data_start - begin} bytes, "
                             f"planned {end - begin}")
        self.written.add(name)

    def copy_from(self, name: str, fd: int, offset: int) -> None:
        """Copy tensor `name`'s bytes from the open file `fd` at byte `offset`, in the kernel where it can
        (`os.copy_file_range`), without passing them through Python objects."""
        if name not in self.plan:
            raise KeyError(f"{self.path}: tensor {name!r} is not in the planned header")
        self.file.flush()
        begin, end = self.offsets[name]
        source, target, left = offset, self.data_start + begin, end - begin
        while left:
            try:
                moved = os.copy_file_range(fd, self.file.fileno(), left, source, target)
            except (AttributeError, OSError):  # no copy_file_range (old kernel, other OS): plain reads and writes
                moved = os.pwrite(self.file.fileno(), os.pread(fd, min(left, 1 << 26), source), target)
            if moved == 0:
                raise ValueError(f"{self.path}: the source of {name!r} ended {left} bytes early (truncated file?)")
            source, target, left = source + moved, target + moved, left - moved
        self.written.add(name)

    def close(self) -> None:
        missing = sorted(set(self.plan) - self.written)
        self.file.close()
        if missing:
            os.remove(self.path)
            raise ValueError(f"{self.path}: tensors never written: {missing[:5]}")

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self.path):
            os.remove(self.path)

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_tensors(tensors: dict[str, torch.Tensor], path: str, metadata: Optional[dict[str, str]] = None) -> None:
    """`save_file` with a reproducible header: the metadata keeps its order (safetensors' own writer orders it
    at random), so the same tensors always give the same bytes and a resumed job matches an uninterrupted one."""
    plan = [TensorInfo(name, DTYPE_NAMES[t.dtype], tuple(t.shape)) for name, t in tensors.items()]
    with SafetensorsWriter(path, plan, metadata) as out:
        for name, tensor in tensors.items():
            out.write(name, tensor)
