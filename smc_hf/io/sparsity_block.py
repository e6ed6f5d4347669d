"""The `sparsity` block of a sparse folder's config.json, and `SparsityReport`, the record it holds.

The block is plain JSON data: method names in it are never resolved or imported on load, so a sparse folder
loads with plain `from_pretrained`. `SparsityReport` is the in-memory form of the same record (counting
the zeros that fill it is `smc_hf.core.report`'s job).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ..version import __version__
from .atomic import write_json
from .mask_file import MASKS_FILE

CONFIG_KEY = "sparsity"


@dataclass
class ModuleSparsity:
    name: str
    numel: int
    zeros: int
    target: Optional[float] = None

    @property
    def achieved(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    modules: list[ModuleSparsity] = field(default_factory=list)
    target: Optional[float] = None
    #: The N:M pattern the masks were made with ("2:4"), and per module the groups found with more than N kept
    #: weights (0 everywhere: verified); None without a pattern.
    pattern: Optional[str] = None
    pattern_violations: Optional[dict[str, int]] = None

    @property
    def pattern_verified(self) -> Optional[bool]:
        """Whether every group of every module holds the pattern (None without a pattern)."""
        if self.pattern is None:
            return None
        return self.pattern_violations is not None and not any(self.pattern_violations.values())

    def pattern_line(self) -> Optional[str]:
        """One sentence stating the pattern and what the checker found, or None without a pattern."""
        if self.pattern is None:
            return None
        n, m = self.pattern.split(":")
        if self.pattern_verified:
            return (f"N:M pattern {self.pattern}: verified, every group of {m} consecutive weights along the input "
                    f"dimension of every module keeps at most {n}.")
        bad = {k: v for k, v in (self.pattern_violations or {}).items() if v}
        shown = ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:5]) + (" ..." if len(bad) > 5 else "")
        return (f"N:M pattern {self.pattern}: NOT verified, {sum(bad.values())} groups keep more than {n} of {m} "
                f"in {len(bad)} modules: {shown or 'not checked'}.")

    @property
    def numel(self) -> int:
        return sum(m.numel for m in self.modules)

    @property
    def zeros(self) -> int:
        return sum(m.zeros for m in self.modules)

    @property
    def achieved(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0

    def pattern_fields(self) -> dict:
        """The pattern entries of a JSON record (none without a pattern)."""
        if self.pattern is None:
            return {}
        return {"pattern": self.pattern, "pattern_verified": self.pattern_verified,
                "pattern_violations": {k: v for k, v in (self.pattern_violations or {}).items() if v}}

    def to_dict(self) -> dict:
        return {
            **self.pattern_fields(),
            "target": self.target,
            "achieved": self.achieved,
            "selected_numel": self.numel,
            "zeros": self.zeros,
            "modules": {
                m.name: {"numel": m.numel, "zeros": m.zeros, "achieved": m.achieved, "target": m.target}
                for m in self.modules
            },
        }

    def to_markdown(self) -> str:
        def pct(x):
            return "-" if x is None else f"{100 * x:.2f}%"

        lines = ["| module | weights | target | achieved |", "|---|---:|---:|---:|"]
        lines += [f"| {m.name} | {m.numel:,} | {pct(m.target)} | {pct(m.achieved)} |" for m in self.modules]
        lines.append(f"| **overall** | {self.numel:,} | {pct(self.target)} | {pct(self.achieved)} |")
        if self.pattern is not None:
            lines += ["", self.pattern_line()]
        return "\n".join(lines)

    __str__ = to_markdown


def sparsity_block(
    report: SparsityReport, method: Optional[str] = None, distribution: Optional[str] = None,
    masks_file: Optional[str] = MASKS_FILE, **extra,
) -> dict:
    """The `sparsity` block of config.json from a report: plain data, never anything to execute."""
    block = {
        "method": method,
        "distribution": distribution,
        "target": report.target,
        "achieved": report.achieved,
        "selected_numel": report.numel,
        "masks_file": masks_file,
        "modules": {
            m.name: {"target": m.target, "achieved": m.achieved, "numel": m.numel, "zeros": m.zeros}
            for m in report.modules
        },
        "smc_hf_version": __version__,
        **report.pattern_fields(),
    }
    block.update(extra)
    return block


def report_from_block(block: dict) -> SparsityReport:
    """The `SparsityReport` recorded in a `sparsity` block."""
    modules = [
        ModuleSparsity(name, int(m.get("numel", 0)), int(m.get("zeros", 0)), m.get("target"))
        for name, m in block.get("modules", {}).items()
    ]
    pattern = block.get("pattern")
    violations = None
    if pattern is not None:
        violations = {m.name: 0 for m in modules}
        violations.update({k: int(v) for k, v in (block.get("pattern_violations") or {}).items()})
        if block.get("pattern_verified") is False and not any(violations.values()):
            violations = None  # recorded as failed without counts: stay unverified
    return SparsityReport(modules, block.get("target"), pattern, violations)


def write_config_block(output_dir: str, block: dict) -> None:
    """Set the `sparsity` block of `output_dir/config.json`, atomically."""
    config_path = os.path.join(output_dir, "config.json")
    with open(config_path) as f:
        data = json.load(f)
    data[CONFIG_KEY] = block
    write_json(config_path, data, indent=2, sort_keys=True)


def read_sparsity_block(folder: str) -> Optional[dict]:
    """The `sparsity` block of a folder's config.json (JSON only), or None if it has none."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {folder}")
    try:
        with open(config_path) as f:
            block = json.load(f).get(CONFIG_KEY)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if block is not None and not isinstance(block, dict):
        raise ValueError(f"{config_path}: the '{CONFIG_KEY}' entry must be an object, got {type(block).__name__}")
    return block
