"""Model FLOP utilisation of the generator: achieved FLOP/s over a matmul peak measured in the same run.

* **Peak**: the FLOP/s of one large square matrix multiply (``2 n^3`` FLOPs) in bf16 and
  in fp32 on the same device, timed here (not a datasheet figure).
* **FLOPs of the work**: counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
  meta device (attention runs as PyTorch's math path there, so its matmuls are counted;
  the CPU's fused attention kernel has no FLOP formula in torch): the AVDiT forward at the
  timed batch, and one training step's forward + backward with the inputs
  ``GeneratorStage`` gives (condition and previous-clip latents, class labels). Optimiser
  and element-wise work is not counted, as usual for MFU.
* **Time**: the no-grad forward of benchmarks/generator_presets.py and the optimiser step
  of benchmarks/train_step.py (``GeneratorStage.losses`` + backward + clip + AdamW).

MFU = achieved FLOP/s / peak FLOP/s, against both the bf16 and the fp32 peak (a bf16
autocast run is fairly judged against the bf16 peak; the fp32 column shows how far it
gets beyond what fp32 could do).

    python benchmarks/mfu.py                                  # tiny and S, fp32 and bf16
    python benchmarks/mfu.py --device cuda --matmul-size 8192 --train-batch S=32
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import (
    PRECISIONS,
    Column,
    add_device_argument,
    finish,
    record,
    render,
    resolve_device,
    run_script,
    time_call,
    torch_threads,
)
from generator_presets import time_forward
from torch.utils.flop_counter import FlopCounterMode
from train_step import measure as measure_train_step
from train_step import stage_config

from mmldm.generator.dit import DiTConfig, build_on_meta

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

PEAK_COLUMNS: list[Column] = [
    ("dtype", "dtype", ""), ("matrix size", "size", ""), ("median (ms)", "median_ms", ".2f"),
    ("peak TFLOP/s", "tflops", ".3f"),
]
MFU_COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("work", "work", ""), ("precision", "precision", ""), ("batch", "batch", ""),
    ("GFLOP / call", "gflop", ".2f"), ("median (s)", "median_s", ".4f"), ("achieved TFLOP/s", "tflops", ".3f"),
    ("MFU vs bf16 peak", "mfu_bf16", ".1%"), ("MFU vs fp32 peak", "mfu_fp32", ".1%"),
]


def matmul_peak(dtype: str, size: int, device: torch.device, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of ``[size, size] @ [size, size]`` in ``dtype`` (one warm-up, median of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device, DTYPES[dtype])
    b = torch.randn(size, size, generator=g).to(device, DTYPES[dtype])
    timing = time_call(lambda: a @ b, device, warmup=1, repeats=repeats)
    flops = 2.0 * size**3
    return {"dtype": dtype, "size": size, **timing.as_dict(), "median_ms": timing.median_s * 1e3,
            "flops": flops, "tflops": flops / timing.median_s / 1e12}


def count_flops(cfg: DiTConfig, batch: int, training: bool) -> float:
    """FLOPs (multiply-add = 2) of an AVDiT forward, or of a training forward + backward with the
    condition inputs GeneratorStage passes, at ``batch`` (meta device: no memory, no time). Class labels
    are left to the model's null class: the same work, and meta tensors cannot be range-checked."""
    model = build_on_meta(cfg).train(training)
    with torch.device("meta"):
        x = {"audio": torch.empty(batch, cfg.audio_channels, *cfg.audio_size),
             "video": torch.empty(batch, cfg.video_channels, *cfg.video_size)}
        t = torch.empty(batch)
        kwargs: dict[str, torch.Tensor] = {}
        if training:
            kwargs = {"audio_cond": torch.empty_like(x["audio"]), "video_cond": torch.empty_like(x["video"])}
            if cfg.previous_clip:
                kwargs.update(prev_audio=torch.empty_like(x["audio"]), prev_video=torch.empty_like(x["video"]))
    counter = FlopCounterMode(display=False)
    with counter:
        if training:
            out = model(x, t, **kwargs)
            sum(value.float().pow(2).mean() for value in out.values()).backward()
        else:
            with torch.no_grad():
                model(x, t)
    return float(counter.get_total_flops())


def _find(rows: list[dict[str, Any]] | None, **match: Any) -> dict[str, Any] | None:
    for row in rows or []:
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def run(presets: tuple[str, ...] = ("tiny", "S"), precisions: tuple[str, ...] = PRECISIONS,
        forward_batch: int = 1, train_batches: dict[str, int] | None = None, repeats: int = 3, steps: int = 2,
        matmul_size: int | None = None, matmul_repeats: int = 5, device: str = "cpu", threads: int | None = None,
        forward_rows: list[dict[str, Any]] | None = None,
        train_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """MFU of the generator's forward and training step for each preset and precision.

    ``forward_rows`` / ``train_rows``: timings already measured in this run (the ``forward`` table of
    generator_presets.py, the ``steps`` table of train_step.py); a matching row (preset, precision,
    batch) is used instead of timing again.
    """
    dev = resolve_device(device)
    matmul_size = matmul_size or (8192 if dev.type == "cuda" else 2048)
    train_batches = {"tiny": 32, "S": 4, **(train_batches or {})}
    settings = {key: value for key, value in locals().items() if key not in ("forward_rows", "train_rows", "dev")}
    with torch_threads(threads):
        peaks = [matmul_peak(dtype, matmul_size, dev, matmul_repeats) for dtype in PRECISIONS]
        peak = {row["dtype"]: row["tflops"] * 1e12 for row in peaks}
        rows = []
        for preset in presets:
            case = f"generator:{preset}"
            _, stage_cfg = stage_config(case)
            train_cfg = stage_cfg.model.dit_config()
            forward_flops = count_flops(DiTConfig.preset(preset), forward_batch, training=False)
            train_batch = train_batches[preset]
            train_flops = count_flops(train_cfg, train_batch, training=True)
            for precision in precisions:
                forward = (_find(forward_rows, preset=preset, dtype=precision, batch=forward_batch)
                           or time_forward(preset, forward_batch, repeats, precision, dev))
                step = (_find(train_rows, stage="generator", preset=preset, precision=precision, batch=train_batch)
                        or measure_train_step(case, train_batch, precision, steps, 1, dev))
                for work, flops, seconds, batch in (("forward", forward_flops, forward["median_s"], forward_batch),
                                                    ("training step", train_flops, step["median_s"], train_batch)):
                    achieved = flops / seconds
                    rows.append({"preset": preset, "work": work, "precision": precision, "batch": batch,
                                 "gflop": flops / 1e9, "median_s": seconds, "tflops": achieved / 1e12,
                                 "mfu_bf16": achieved / peak["bf16"], "mfu_fp32": achieved / peak["fp32"]})
        return record("mfu", dev, settings, {"matmul_peak": peaks, "mfu": rows})


def markdown(result: dict[str, Any]) -> str:
    return render(result, [("Matrix-multiply peak measured on this machine", "matmul_peak", PEAK_COLUMNS),
                           ("Generator model FLOP utilisation (FLOPs: FlopCounterMode, multiply-add = 2)", "mfu",
                            MFU_COLUMNS)])


def _batch_setting(text: str) -> tuple[str, int]:
    preset, _, size = text.partition("=")
    if not preset or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected PRESET=N, got '{text}'")
    return preset, int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "S"], choices=["tiny", "S"])
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--forward-batch", type=int, default=1)
    parser.add_argument("--train-batch", nargs="+", type=_batch_setting, default=[],
                        help="training batch as PRESET=N (defaults: tiny=32 S=4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--matmul-size", type=int, default=None, help="peak matmul side (default: 2048 CPU, 8192 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    result = run(tuple(args.presets), tuple(args.precision), args.forward_batch, dict(args.train_batch),
                 args.repeats, args.steps, args.matmul_size, 5, args.device, args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
