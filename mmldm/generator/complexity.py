"""Parameter and FLOP counts of :class:`~mmldm.generator.dit.AVDiT` presets, without memory.

The network is built on the meta device (shapes only) and one forward at batch
1 runs under ``torch.utils.flop_counter.FlopCounterMode``, which counts a
multiply-add as 2 FLOPs. On the meta device attention runs as PyTorch's math
path, so its two matmuls appear as ``aten.bmm``.

The paper's Table 4 "GFLOPs" equal the multiply-adds of the linear layers only
(``aten.addmm``/``aten.mm`` FLOPs / 2): S 33.9, B 100.5, L 407.2 against the
printed 34, 101, 407. That is the fvcore convention DiT reports (one
multiply-add = one "FLOP"), with the attention matmuls not counted (fvcore has
no counter for ``scaled_dot_product_attention``). We report that figure beside
the full count.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from .dit import PAPER_TABLE4, DiTConfig, build_on_meta, count_parameters

LINEAR_OPS = ("aten.addmm", "aten.mm")


@dataclasses.dataclass
class Complexity:
    """Counts for one forward pass at batch 1."""

    name: str
    depth: int
    width: int
    num_heads: int
    sequence_length: int
    params: int
    #: all FLOPs FlopCounterMode sees (multiply-add = 2)
    flops: float
    #: multiply-adds of the linear layers (= the paper's "GFLOPs" convention)
    linear_macs: float
    paper_params: float | None = None
    paper_gflops: float | None = None


def complexity(cfg: DiTConfig, name: str = "") -> Complexity:
    """Count parameters and FLOPs of ``AVDiT(cfg)`` for one forward at batch 1 (meta device)."""
    model = build_on_meta(cfg)
    with torch.device("meta"):
        x = {"audio": torch.empty(1, cfg.audio_channels, *cfg.audio_size),
             "video": torch.empty(1, cfg.video_channels, *cfg.video_size)}
        t = torch.empty(1)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x, t)
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    paper = PAPER_TABLE4.get(name, {})
    return Complexity(name=name, depth=cfg.depth, width=cfg.width, num_heads=cfg.num_heads,
                      sequence_length=cfg.sequence_length, params=count_parameters(model),
                      flops=float(counter.get_total_flops()),
                      linear_macs=sum(per_op.get(op, 0) for op in LINEAR_OPS) / 2,
                      paper_params=paper.get("params"), paper_gflops=paper.get("gflops"))


def preset_complexities(names: list[str] | None = None) -> list[Complexity]:
    """:func:`complexity` of each preset (all by default), at the preset's own latent sizes."""
    from .dit import DIT_PRESETS

    return [complexity(DiTConfig.preset(name), name) for name in (names or list(DIT_PRESETS))]


def markdown_table(rows: list[Complexity]) -> str:
    """The rows as a markdown table, paper figures beside ours."""

    def fmt(value: float | None, scale: float, digits: int = 1) -> str:
        return "-" if value is None else f"{value / scale:.{digits}f}"

    lines = ["| preset | depth | width | heads | tokens | params (M) | paper params (M) "
             "| linear GMACs | paper GFLOPs | total GFLOPs (mult-add = 2) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.depth} | {r.width} | {r.num_heads} | {r.sequence_length} "
                     f"| {fmt(r.params, 1e6)} | {fmt(r.paper_params, 1e6, 0)} | {fmt(r.linear_macs, 1e9)} "
                     f"| {fmt(r.paper_gflops, 1, 0)} | {fmt(r.flops, 1e9)} |")
    return "\n".join(lines)
