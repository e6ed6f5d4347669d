"""Prune a safetensors checkpoint shard by shard, for models larger than memory.

Which weights are pruned is decided exactly as in memory: the model is built on the meta device (no
memory) and `select_parameters` picks the names. Scores are |w| (omp) or the random criterion's own numbers
(`random_draws`: the same generator, layer by layer in selection order, as `prune_model`), turned into
order-preserving int32 keys piece by piece; masks equal `prune_model`'s bit for bit, ties included (layer
order, then position).

Global distribution, exact, in one read pass plus the write pass:
1. a sample (1/256 of each selected tensor, in 16 spread runs; random scores: the first draws of each layer)
   guesses a band of keys around the k-th smallest (the target quantile +- 8 standard errors of the sample);
2. the read pass counts, per piece, the keys below the band and keeps the keys inside it, per tensor as
   distinct values and counts (about 1% of the weights); the k-th smallest key T and each tensor's share of
   the ties at T (selection order first, as `prune_lowest`) follow from them;
3. the write pass reads each tensor once more and writes it pruned.
Should the band miss the k-th key or outgrow its memory budget, two radix passes (`smc_hf.core.radix`) over
the selected weights find it instead: slower, same masks. `uniform` and `erk` need no global pass: each
tensor's keys are ranked in memory (one tensor's int32 keys) when it is written.

I/O: tensors are read in pieces of `CHUNK` elements with `os.preadv` into reused buffers (no mmap, so the
shards' pages never count in RSS), pruned weights are zeroed in place with an integer AND, and pieces are
written with `os.pwrite`; tensors that are not pruned are copied in the kernel (`os.copy_file_range`).
Memory: a few `CHUNK`-sized buffers, the band's keys, one tensor's keys for `uniform`/`erk`, and the packed
masks of one shard. Measured figures: README, `benchmarks/streaming_prune.py`.

Output is built under `<output>.partial` with a state file that records each finished stage (thresholds,
each shard, the merged mask file, compression); an interrupted run started again with the same arguments
continues after the last finished stage and ends with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..config import SparsityConfig
from ..core.allocation import erk_keep_counts
from ..core.criteria import random_draws
from ..core.radix import RadixSelect
from ..core.report import ModuleSparsity, SparsityReport
from ..io.atomic import write_json
from ..io.compressed import compress_folder, mark_compressed, remove_dense_files
from ..io.folders import PARTIAL_MARKER, copy_auxiliary_files, staged_folder
from ..io.mask_file import MASKS_FILE, bool_masks_metadata, packed_masks_plan, unpack_bits
from ..io.model_card import source_name, write_model_card
from ..io.safetensors_io import (
    DTYPES, INDEX_FILE, SafetensorsWriter, TensorInfo, checkpoint_files, data_layout, read_header,
)
from ..io.sparsity_block import write_config_block
from ..methods import METHODS
from .loading import model_class_for
from .sparse_folder import config_block

logger = logging.getLogger(__name__)

#: Elements read, scored and written at a time (a multiple of 8, so packed mask pieces concatenate).
CHUNK = 1 << 22
STATE_FILE = ".smc_prune_state.json"
PIECES_DIR = ".masks"
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_INF_KEY = 0x7F800000
#: The band sample: 1/SAMPLE_FRACTION of each tensor (at least SAMPLE_MIN elements), in SAMPLE_RUNS runs.
SAMPLE_FRACTION, SAMPLE_MIN, SAMPLE_RUNS = 256, 4096, 16
#: Half-width of the band in quantile units: this many standard errors of the sampled quantile, at least BAND_MIN.
BAND_SIGMAS, BAND_MIN = 8.0, 0.001
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def prune_chunk(keys: torch.Tensor, threshold: int, quota: int,
                out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, int]:
    """Keep-mask of a chunk: keys above the threshold, and ties beyond the first `quota` ones.

    Returns the mask (written into the bool tensor `out` when given) and the quota left for later chunks;
    the tie positions are only looked up in the (at most one) chunk where the quota runs out.
    """
    if quota == 0:
        return torch.ge(keys, threshold, out=out), 0
    ties = keys == threshold
    count = int(torch.count_nonzero(ties))
    keep = torch.gt(keys, threshold, out=out)
    if count <= quota:
        return keep, quota - count
    keep[ties.nonzero().squeeze(1)[quota:]] = True
    return keep, 0


# -- what to prune --------------------------------------------------------------------------------------
@dataclass
class Target:
    """A selected weight: its name in the checkpoint, the file holding it, and its header entry."""

    name: str
    file: str
    info: TensorInfo


def _meta_model(folder: str, model_class: Optional[str], trust_remote_code: bool):
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    cls = model_class_for(config, model_class)
    with init_empty_weights():
        if hasattr(cls, "from_config"):
            return cls.from_config(config, trust_remote_code=trust_remote_code)
        return cls(config)


def select_targets(
    folder: str, headers: dict[str, list[TensorInfo]], config: SparsityConfig,
    model_class: Optional[str] = None, trust_remote_code: bool = False,
) -> list[Target]:
    """The checkpoint tensors to prune, in the model's selection order (`select_parameters` on a meta model)."""
    from ..core.selection import parameter_aliases, select_parameters

    model = _meta_model(folder, model_class, trust_remote_code)
    selected = select_parameters(model, targets=config.targets, ignore=config.ignore, selection=config.selection)
    aliases = parameter_aliases(model)
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."
    where = {info.name: (path, info) for path, infos in headers.items() for info in infos}
    targets, missing = [], []
    for name, param in selected.items():
        candidates = aliases.get(id(param), [name])
        candidates = candidates + [prefix + c for c in candidates] + [c[len(prefix):] for c in candidates
                                                                      if c.startswith(prefix)]
        found = next((c for c in candidates if c in where), None)
        if found is None:
            missing.append(name)
            continue
        path, info = where[found]
        if info.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{path}: selected weight {found} has dtype {info.dtype}, expected a float dtype")
        if info.shape != tuple(param.shape):
            raise ValueError(f"{path}: {found} has shape {info.shape}, the model expects {tuple(param.shape)}")
        targets.append(Target(found, path, info))
    if missing:
        raise ValueError(
            f"selected weights not found in the checkpoint: {missing[:5]}; the checkpoint's names differ from "
            "the model's, pass targets= regexes over the checkpoint's tensor names"
        )
    return targets


# -- reading in pieces ----------------------------------------------------------------------------------
class Scratch:
    """Buffers reused for every piece, so a pass allocates (and page-faults) them once: the piece's bytes,
    its int32 keys, a bool keep-mask and an integer mask of the piece's width."""

    def __init__(self):
        self._raw = torch.empty(0, dtype=torch.uint8)
        self._ints = torch.empty(0, dtype=torch.uint8)
        self.keys = torch.empty(CHUNK, dtype=torch.int32)
        self.keep = torch.empty(CHUNK, dtype=torch.bool)
        self.other = torch.empty(CHUNK, dtype=torch.bool)

    def raw(self, nbytes: int) -> torch.Tensor:
        if self._raw.numel() < nbytes:
            self._raw = torch.empty(nbytes, dtype=torch.uint8)
        return self._raw[:nbytes]

    def ints(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        if self._ints.numel() < nbytes:
            self._ints = torch.empty(nbytes, dtype=torch.uint8)
        return self._ints[:nbytes].view(dtype)


class ShardReader:
    """A safetensors file's tensors read in pieces of `CHUNK` elements with `os.preadv` into `Scratch`."""

    def __init__(self, path: str):
        self.path = path
        self.data_start, self.offsets = data_layout(path)
        self.fd = os.open(path, os.O_RDONLY)

    def offset(self, name: str) -> int:
        return self.data_start + self.offsets[name][0]

    def read(self, info: TensorInfo, start: int, count: int, scratch: Scratch) -> torch.Tensor:
        """Elements [start, start + count) of tensor `info`, flat, in the scratch bytes (valid until the next read)."""
        dtype = DTYPES[info.dtype]
        itemsize = torch.empty((), dtype=dtype).element_size()
        raw = scratch.raw(count * itemsize)
        view, position, done = memoryview(raw.numpy()), self.offset(info.name) + start * itemsize, 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], position + done)
            if got == 0:
                raise ValueError(f"{self.path}: tensor {info.name} ends early (truncated file?)")
            done += got
        return raw.view(dtype)

    def pieces(self, info: TensorInfo, scratch: Scratch) -> Iterator[torch.Tensor]:
        for start in range(0, info.numel, CHUNK):
            yield self.read(info, start, min(CHUNK, info.numel - start), scratch)

    def close(self) -> None:
        os.close(self.fd)


# -- scores ---------------------------------------------------------------------------------------------
def magnitude_keys(piece: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """int32 keys of |piece| into `out`: |w| >= 0, so its float32 bit pattern orders like its value; inf and
    NaN land at keys >= _INF_KEY."""
    values = out.view(torch.float32)
    if piece.dtype == torch.float32:
        torch.abs(piece, out=values)
    else:  # float64 rounds to float32 as the in-memory `p.abs().float()` does (rounding is sign-symmetric)
        values.copy_(piece).abs_()
    return out


class Scorer:
    """Keys of a selected tensor's scores, piece by piece: |w| (read from the shard) or the random criterion's
    draws for that layer (no read needed), as `prune_model` scores them."""

    def __init__(self, criterion: str, targets: list["Target"], seed: int):
        self.criterion = criterion
        self.index = {t.name: i for i, t in enumerate(targets)}
        self.draws = random_draws(seed, 0, [t.info.numel for t in targets]) if criterion == "random" else None
        #: magnitude: a weight is zero exactly when its key is 0
        self.zero_is_lowest = criterion == "magnitude"

    def keys(self, target: "Target", reader: Optional[ShardReader], scratch: Scratch,
             with_weights: bool = False) -> Iterator[tuple[Optional[torch.Tensor], torch.Tensor]]:
        """(piece of weights or None, its keys) in order; the weights are read when the keys need them or
        `with_weights` asks. Both live in `scratch` until the next piece."""
        info = target.info
        generator = self.draws.generator(self.index[target.name]) if self.draws is not None else None
        for start in range(0, info.numel, CHUNK):
            n = min(CHUNK, info.numel - start)
            piece = reader.read(info, start, n, scratch) if (with_weights or generator is None) else None
            keys = scratch.keys[:n]
            if generator is None:
                magnitude_keys(piece, keys)
            else:  # uniform [0, 1) floats: their bits order like their values
                keys.view(torch.float32).uniform_(generator=generator)
            yield piece, keys

    def sample(self, target: "Target", reader: ShardReader, scratch: Scratch) -> torch.Tensor:
        """Keys of a sample of the tensor: all of it when small, else 1/SAMPLE_FRACTION in SAMPLE_RUNS spread runs
        (random: the layer's first draws, as good a sample as any)."""
        n = target.info.numel
        size = min(n, max(SAMPLE_MIN, n // SAMPLE_FRACTION))
        if self.draws is not None:
            draws = torch.empty(size)
            return draws.uniform_(generator=self.draws.generator(self.index[target.name])).view(torch.int32)
        if size == n:
            return torch.cat([magnitude_keys(p, torch.empty(p.numel(), dtype=torch.int32))
                              for p in reader.pieces(target.info, scratch)])
        run = -(-size // SAMPLE_RUNS)
        starts = [(n - run) * i // (SAMPLE_RUNS - 1) for i in range(SAMPLE_RUNS)]
        return torch.cat([magnitude_keys(reader.read(target.info, s, run, scratch), torch.empty(run, dtype=torch.int32))
                          for s in starts])


# -- the global threshold in one read pass -------------------------------------------------------------
def guess_band(samples: list[tuple[torch.Tensor, int]], k: int, total: int) -> tuple[int, int]:
    """Keys [lo, hi) likely to hold the k-th smallest of `total` keys, from per-tensor samples (keys, numel):
    the sampled quantile k/total +- BAND_SIGMAS standard errors (at least BAND_MIN), each sample weighted by
    the share of its tensor it stands for."""
    keys = torch.cat([s for s, _ in samples])
    weights = torch.cat([torch.full((s.numel(),), n / max(s.numel(), 1), dtype=torch.float64) for s, n in samples])
    order = torch.argsort(keys, stable=True)
    keys, cumulative = keys[order], torch.cumsum(weights[order], 0)
    q = k / total
    half = max(BAND_MIN, BAND_SIGMAS * math.sqrt(q * (1 - q) / keys.numel()))
    low = int(torch.searchsorted(cumulative, torch.tensor((q - half) * total, dtype=torch.float64)))
    high = int(torch.searchsorted(cumulative, torch.tensor((q + half) * total, dtype=torch.float64)))
    lo = int(keys[min(low, keys.numel() - 1)]) if q - half > 0 else 0
    hi = int(keys[min(high, keys.numel() - 1)]) + 1 if q + half < 1 else 2**31 - 1
    return lo, max(hi, lo + 1)


class BandThreshold:
    """The k-th smallest key, from one pass that counts the keys below [lo, hi) and keeps those inside it.

    `add(group, keys)` for every piece, `close(group)` after each group (tensor); then `resolve(order)` gives
    (threshold T, per-group quota of ties at T to prune, earlier groups first) or None when T is outside the
    band or the band outgrew `budget` kept keys (the caller then finds T another way).
    """

    def __init__(self, k: int, lo: int, hi: int, budget: int):
        self.k, self.lo, self.hi, self.budget = k, lo, hi, budget
        self.below = 0
        self.kept = 0
        self.overflow = False
        self.pending: list[torch.Tensor] = []
        self.groups: dict[object, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, keys: torch.Tensor, scratch: Scratch) -> None:
        low = torch.lt(keys, self.lo, out=scratch.keep[:keys.numel()])
        self.below += int(torch.count_nonzero(low))
        if self.overflow:
            return
        inside = torch.lt(keys, self.hi, out=scratch.other[:keys.numel()]).logical_xor_(low)  # lo <= key < hi
        band = keys[inside]
        if band.numel():
            self.pending.append(band)
            self.kept += band.numel()
            if self.kept > self.budget:
                self.overflow, self.pending, self.groups = True, [], {}

    def close(self, group) -> None:
        if self.pending and not self.overflow:
            values, counts = torch.unique(torch.cat(self.pending), return_counts=True)
            self.groups[group] = (values, counts)
            self.kept += values.numel() - sum(p.numel() for p in self.pending)
        self.pending = []

    def resolve(self, order: list) -> Optional[tuple[int, dict]]:
        if self.overflow:
            return None
        rank = self.k - self.below  # T is the rank-th smallest key inside the band
        if rank <= 0 or not self.groups:
            return None
        values = torch.cat([v for v, _ in self.groups.values()])
        counts = torch.cat([c for _, c in self.groups.values()])
        values, inverse = torch.unique(values, return_inverse=True)
        counts = torch.zeros(values.numel(), dtype=torch.int64).index_add_(0, inverse, counts)
        cumulative = torch.cumsum(counts, 0)
        if rank > int(cumulative[-1]):
            return None
        at = int(torch.searchsorted(cumulative, rank))
        threshold = int(values[at])
        ties = rank - (int(cumulative[at - 1]) if at > 0 else 0)
        quotas = {}
        for group in order:
            group_values, group_counts = self.groups.get(group, (values[:0], counts[:0]))
            hit = (group_values == threshold).nonzero()
            equal = int(group_counts[hit[0, 0]]) if hit.numel() else 0
            quotas[group] = min(ties, equal)
            ties -= quotas[group]
        return threshold, quotas


# -- the job --------------------------------------------------------------------------------------------
#: The job's stages, in order; the state file records the last one finished, so a rerun continues after it.
STAGES = ("shards", "merged", "compressed")


@dataclass
class StreamingState:
    fingerprint: str
    thresholds: dict[str, list[int]] = field(default_factory=dict)  # name -> [threshold, tie quota]
    done: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # shard -> name -> [numel, zeros, pruned]
    #: "shards" while shards are written (`done` says which), then "merged" (mask file written, pieces may
    #: remain), then "compressed" (compressed files and index written, dense files may remain).
    stage: str = "shards"
    compressed_ratio: Optional[float] = None

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)

    def save(self, path: str) -> None:
        write_json(path, self.__dict__)

    @classmethod
    def load(cls, path: str) -> Optional["StreamingState"]:
        """The saved state, or None when there is none or it is unreadable (the run then starts over)."""
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                state = cls(**json.load(f))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            logger.warning("%s is unreadable (%s); starting over", path, err)
            return None
        return state if state.stage in STAGES else None


def _fingerprint(files: list[str], config: SparsityConfig, **options) -> str:
    stats = [(os.path.basename(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in files]
    text = json.dumps({"files": stats, "config": config.to_dict(), **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled)


def _by_file(targets: list[Target]) -> dict[str, list[Target]]:
    out: dict[str, list[Target]] = {}
    for t in targets:
        out.setdefault(t.file, []).append(t)
    return out


def _check_finite(keys: torch.Tensor, target: Target) -> None:
    if keys.numel() and int(keys.max()) >= _INF_KEY:
        raise ValueError(f"{target.file}: weight {target.name} contains inf or NaN; cannot rank it")


def _global_thresholds(targets, config, scorer: Scorer, progress, band_budget: int) -> dict[str, list[int]]:
    """{name: [threshold, tie quota]} for the global distribution: a sample, then one read pass (`BandThreshold`),
    or, when the band misses, two radix passes."""
    total = sum(t.info.numel for t in targets)
    k = round(config.sparsity * total)
    if k == 0:
        return {t.name: [-1, 0] for t in targets}
    scratch, by_file = Scratch(), _by_file(targets)
    readers = {path: ShardReader(path) for path in by_file}
    try:
        samples = [(scorer.sample(t, readers[t.file], scratch), t.info.numel) for t in targets]
        finder = BandThreshold(k, *guess_band(samples, k, total), budget=band_budget)
        del samples
        nbytes = sum(t.info.nbytes for t in targets)
        with _bar(nbytes, "pass 1/2: threshold", progress) as bar:
            for path, group in by_file.items():
                for t in group:
                    for _, keys in scorer.keys(t, readers[path], scratch):
                        if scorer.zero_is_lowest:
                            _check_finite(keys, t)
                        finder.add(keys, scratch)
                    finder.close(t.name)
                    bar.update(t.info.nbytes)
        found = finder.resolve([t.name for t in targets])
        if found is None:
            logger.warning("the sampled band missed the global threshold (heavy ties or a skewed sample); finding "
                           "it with two more reading passes over the selected weights")
            found = _radix_threshold(k, targets, by_file, readers, scorer, scratch)
    finally:
        for reader in readers.values():
            reader.close()
    threshold, quotas = found
    return {t.name: [threshold, quotas[t.name]] for t in targets}


def _radix_threshold(k, targets, by_file, readers, scorer, scratch) -> tuple[int, dict]:
    """(threshold, per-tensor tie quota) from two radix passes (`RadixSelect`) over the selected weights."""
    select = RadixSelect(k)
    for pass_no in (1, 2):
        lows = {}
        for path, group in by_file.items():
            for t in group:
                found = []
                for _, keys in scorer.keys(t, readers[path], scratch):
                    if pass_no == 1:
                        select.add_high(keys, scratch.ints(torch.int32, keys.numel()))
                    else:
                        found.append(select.add_low(keys, scratch.ints(torch.int32, keys.numel())))
                if found:
                    lows[t.name] = torch.unique(torch.cat(found), return_counts=True)
        if pass_no == 1:
            select.find_bucket()
    threshold, ties = select.resolve()
    quotas = {}
    for t in targets:  # the ties at the threshold go to tensors in selection order
        values, counts = lows.get(t.name, (torch.empty(0, dtype=torch.int32), None))
        hit = (values == (threshold & 0xFFFF)).nonzero()
        quotas[t.name] = min(ties, int(counts[hit[0, 0]]) if hit.numel() else 0)
        ties -= quotas[t.name]
    return threshold, quotas


def _local_threshold(target: Target, k: int, reader: ShardReader, scorer: Scorer, scratch: Scratch) -> tuple[int, int]:
    """(threshold, tie quota) pruning exactly the k lowest keys of one tensor, ranked in memory."""
    if k == 0:
        return -1, 0
    keys, start = torch.empty(target.info.numel, dtype=torch.int32), 0
    for _, piece in scorer.keys(target, reader, scratch):
        keys[start:start + piece.numel()] = piece
        start += piece.numel()
    if scorer.zero_is_lowest:
        _check_finite(keys, target)
    threshold = int(torch.kthvalue(keys, k).values)
    return threshold, k - int(torch.count_nonzero(keys < threshold))


def _pruned_pieces(target, threshold, quota, reader, scorer, scratch, result: dict) -> Iterator[torch.Tensor]:
    """The tensor's pieces with pruned weights zeroed (bits ANDed with 0); fills `result` with the packed
    keep-mask and [numel, zeros, pruned]."""
    packed, zeros, pruned = [], 0, 0
    for piece, keys in scorer.keys(target, reader, scratch, with_weights=True):
        n = keys.numel()
        keep, quota = prune_chunk(keys, threshold, quota, out=scratch.keep[:n])
        kept = int(torch.count_nonzero(keep))
        pruned += n - kept
        if kept < n:
            bits = piece.view(_INT_OF_SIZE[piece.element_size()])
            bits.bitwise_and_(scratch.ints(bits.dtype, n).copy_(keep).neg_())  # keep: all ones, pruned: 0
        if not (scorer.zero_is_lowest and threshold > 0):
            zeros += n - int(torch.count_nonzero(piece))
        packed.append(torch.from_numpy(np.packbits(keep.numpy(), bitorder="little")))
        yield piece
    # Above a positive threshold every zero (key 0) was pruned; otherwise kept zeros were counted.
    result["bits"] = torch.cat(packed) if packed else torch.empty(0, dtype=torch.uint8)
    result["stats"] = [target.info.numel, pruned if scorer.zero_is_lowest and threshold > 0 else zeros, pruned]


def _write_shard(path, stage, targets_here: dict[str, Target], thresholds, local_counts, scorer,
                 bar) -> dict[str, list[int]]:
    infos, metadata = read_header(path)
    name = os.path.basename(path)
    stats, pieces, scratch = {}, {}, Scratch()
    reader = ShardReader(path)
    try:
        with SafetensorsWriter(os.path.join(stage, name + ".tmp"), infos, metadata) as out:
            for info in infos:
                target = targets_here.get(info.name)
                if target is None:
                    out.copy_from(info.name, reader.fd, reader.offset(info.name))
                else:
                    if info.name in local_counts:
                        threshold, quota = _local_threshold(target, local_counts[info.name], reader, scorer, scratch)
                    else:
                        threshold, quota = thresholds[info.name]
                    result: dict = {}
                    out.write_pieces(info.name, _pruned_pieces(target, threshold, quota, reader, scorer, scratch,
                                                               result))
                    pieces[info.name], stats[info.name] = result["bits"], result["stats"]
                bar.update(info.nbytes)
    finally:
        reader.close()
    os.makedirs(os.path.join(stage, PIECES_DIR), exist_ok=True)
    save_file(pieces, os.path.join(stage, PIECES_DIR, name), metadata={"format": "smc_hf.packed_pieces"})
    os.replace(os.path.join(stage, name + ".tmp"), os.path.join(stage, name))
    return stats


def _merge_masks(stage: str, targets: list[Target], packed: bool) -> None:
    """Join the per-shard mask pieces into one mask file, one mask in memory at a time."""
    shapes = {t.name: t.info.shape for t in targets}
    if packed:
        plan, metadata = packed_masks_plan(shapes)
    else:
        plan = [TensorInfo(n, "BOOL", s) for n, s in shapes.items()]
        metadata = bool_masks_metadata()
    by_file: dict[str, list[Target]] = {}
    for t in targets:
        by_file.setdefault(os.path.basename(t.file), []).append(t)
    with SafetensorsWriter(os.path.join(stage, MASKS_FILE), plan, metadata) as out:
        for shard, group in by_file.items():
            piece = os.path.join(stage, PIECES_DIR, shard)
            if not os.path.isfile(piece):
                raise FileNotFoundError(f"{piece}: mask piece missing from the partial run in {stage}; "
                                        "delete that folder and run again")
            pieces = load_file(piece)
            for t in group:
                bits = pieces[t.name]
                out.write(t.name, bits if packed else unpack_bits(bits, t.info.shape, t.name))


def _assemble(stage: str, source: str, targets: list[Target], state: StreamingState, config: SparsityConfig,
              packed_masks: bool, base_model: Optional[str]) -> SparsityReport:
    """Copy the source's index, config and auxiliary files and write the `sparsity` block (idempotent)."""
    if os.path.isfile(os.path.join(source, INDEX_FILE)):
        shutil.copy2(os.path.join(source, INDEX_FILE), os.path.join(stage, INDEX_FILE))
    shutil.copy2(os.path.join(source, "config.json"), os.path.join(stage, "config.json"))
    copy_auxiliary_files(source, stage)
    report = _report(targets, state, config)
    block = config_block(report, config, MASKS_FILE, masks_format="packed_bits" if packed_masks else "bool",
                          source=source_name(base_model or source), streaming=True)
    write_config_block(stage, block)
    return report


def _report(targets: list[Target], state: StreamingState, config: SparsityConfig) -> SparsityReport:
    stats = {name: s for shard in state.done.values() for name, s in shard.items()}
    modules = [ModuleSparsity(t.name, stats[t.name][0], stats[t.name][1], stats[t.name][2] / t.info.numel)
               for t in targets]
    return SparsityReport(modules, config.sparsity)


def _clear_stage(stage: str) -> None:
    """Remove everything but the staging marker (leftovers of another run must not reach the output)."""
    for name in os.listdir(stage):
        path = os.path.join(stage, name)
        if name == PARTIAL_MARKER:
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def prune_checkpoint_streaming(
    source: str,
    output_dir: str,
    config: SparsityConfig,
    *,
    model_class: Optional[str] = None,
    trust_remote_code: bool = False,
    packed_masks: bool = True,
    compress: bool = False,
    base_model: Optional[str] = None,
    command: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SparsityReport:
    """Prune the safetensors checkpoint in folder `source` into `output_dir` without loading the model.

    Supports omp and random (before/after) with global, uniform or erk distributions. Returns the report
    written into the folder's `sparsity` block.
    """
    criterion = METHODS.get(config.method).streaming_criterion
    if criterion is None:
        supported = [n for n in METHODS.names() if METHODS.get(n).streaming_criterion]
        raise ValueError(
            f"streaming pruning supports {supported} (magnitude or random scores); method "
            f"{config.method!r} needs the model in memory (run without streaming)"
        )
    distribution = config.distribution or METHODS.get(config.method).default_distribution
    files = checkpoint_files(source)
    headers = {path: read_header(path)[0] for path in files}
    targets = select_targets(source, headers, config, model_class, trust_remote_code)
    seed = config.mask_seed if config.mask_seed is not None else 0
    scorer = Scorer(criterion, targets, seed)
    fingerprint = _fingerprint(files, config, model_class=model_class, packed=packed_masks, compress=compress,
                               source=os.path.abspath(source))
    local_counts: dict[str, int] = {}
    if distribution == "uniform":
        local_counts = {t.name: round(config.sparsity * t.info.numel) for t in targets}
    elif distribution == "erk":
        keep = erk_keep_counts([t.info.shape for t in targets], config.sparsity, config.erk_power_scale)
        local_counts = {t.name: t.info.numel - kept for t, kept in zip(targets, keep)}

    with staged_folder(output_dir, overwrite=overwrite, resume=True, sources=(source,)) as stage:
        state_path = os.path.join(stage, STATE_FILE)
        state = StreamingState.load(state_path)
        if state is None or state.fingerprint != fingerprint:
            if state is not None:
                logger.warning("%s holds an interrupted run with other inputs; starting over", stage)
            _clear_stage(stage)
            state = StreamingState(fingerprint)
        if distribution == "global" and not state.thresholds:
            largest_shard = max(os.path.getsize(p) for p in files)
            state.thresholds = _global_thresholds(targets, config, scorer, progress, band_budget=largest_shard // 48)
            state.save(state_path)
        by_file = {path: {t.name: t for t in group} for path, group in _by_file(targets).items()}
        todo = [p for p in files if os.path.basename(p) not in state.done]
        total = sum(os.path.getsize(p) for p in todo)
        with _bar(total, "pass 2/2: write", progress) as bar:
            for path in todo:
                state.done[os.path.basename(path)] = _write_shard(
                    path, stage, by_file.get(path, {}), state.thresholds, local_counts, scorer, bar
                )
                state.save(state_path)
        if not state.reached("merged"):
            _merge_masks(stage, targets, packed_masks)
            state.stage = "merged"
            state.save(state_path)
        shutil.rmtree(os.path.join(stage, PIECES_DIR), ignore_errors=True)
        if not state.reached("compressed"):
            report = _assemble(stage, source, targets, state, config, packed_masks, base_model)
        else:
            report = _report(targets, state, config)
        if compress:
            if not state.reached("compressed"):
                state.compressed_ratio = compress_folder(stage, remove_dense=False).ratio
                state.stage = "compressed"
                state.save(state_path)
            remove_dense_files(stage)
            mark_compressed(stage, state.compressed_ratio)
        write_model_card(stage, base_model=base_model or source, command=command)
        os.remove(state_path)
    return report
