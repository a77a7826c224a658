"""``train.mixed_precision: auto``: bf16 only where the device multiplies it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmldm.training import precision
from mmldm.training.precision import cpu_flags_support_bf16, resolve_mixed_precision

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_NO_BF16 = "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
AVX512_BF16 = "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_NO_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


@pytest.mark.parametrize("text, native", [(AVX2_ONLY, False), (AVX512_NO_BF16, False), (AVX512_BF16, True),
                                          (AMX, True), (ARM_BF16, True), (ARM_NO_BF16, False), ("", False),
                                          ("model name\t: bf16 marketing name\n", False)])
def test_cpu_flags(text: str, native: bool) -> None:
    assert cpu_flags_support_bf16(text) is native


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_cpu_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_mixed_precision("auto", use_cpu=True) == expected


def test_auto_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto", use_cpu=False) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto", use_cpu=False) == "fp16"
    assert resolve_mixed_precision("auto", use_cpu=True) in ("bf16", "no")  # train.device=cpu on a GPU machine


@pytest.mark.parametrize("setting", ["no", "bf16", "fp16"])
def test_explicit_settings_are_kept(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_mixed_precision(setting, use_cpu=True) == setting


def test_this_machine_is_read_consistently() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    assert precision.cpu_has_native_bf16() is cpu_flags_support_bf16(cpuinfo.read_text(errors="replace"))


def test_precision_names_in_logs() -> None:
    from mmldm.training.precision import precision_name

    assert [precision_name(p) for p in ("no", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
