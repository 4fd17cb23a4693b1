import torch

from hf_mtbert.hardware import cpu_info


def test_cpu_info_reports_torch_capability():
    info = cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.amx == torch.cpu._is_amx_tile_supported()
    assert info.native_bf16 == (info.amx or info.avx512_bf16)
    assert info.model and info.capability in info.describe()
    assert ("emulated" in info.describe()) == (not info.native_bf16)
