"""What the CPU can do, detected rather than assumed (our machines range from AVX2-only to AMX)."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # a private probe that misbehaves means "unknown", i.e. not supported
        return False


@dataclass(frozen=True)
class CpuInfo:
    model: str
    capability: str  # torch's ATen dispatch level: "AVX2", "AVX512", ...
    amx: bool
    avx512_bf16: bool
    threads: int

    @property
    def native_bf16(self) -> bool:
        """True when bf16 matmuls run in hardware (AMX tiles or AVX512-BF16) instead of being emulated."""
        return self.amx or self.avx512_bf16

    def describe(self) -> str:
        bf16 = "native (AMX)" if self.amx else "native (AVX512-BF16)" if self.avx512_bf16 else "emulated"
        return f"{self.model} | torch capability {self.capability} | bf16 {bf16} | {self.threads} threads"


def cpu_info() -> CpuInfo:
    return CpuInfo(
        model=_cpu_model_name(),
        capability=torch.backends.cpu.get_cpu_capability(),
        amx=_probe("_is_amx_tile_supported"),
        avx512_bf16=_probe("_is_avx512_bf16_supported"),
        threads=torch.get_num_threads(),
    )
