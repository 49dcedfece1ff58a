"""experiments/memory.py: the CPU allocator setting the trainer makes, checked by its effect."""
import platform

import pytest
import torch

from experiments.memory import _read_status_kib, large_tensors_in_their_own_mappings


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_large_tensor_goes_back_to_the_os_even_with_later_blocks_after_it():
    # With glibc's default, a freed 64 MiB block raises the mmap threshold; later 16 MiB tensors
    # then come from the heap, and once a small block is allocated after one, freeing the tensor
    # cannot shrink the heap: RSS grows by 16 MiB per round (measured: 227 -> 243 -> 260 MB). With
    # the fixed threshold the trainer sets, each tensor is its own mapping and goes back when freed.
    assert large_tensors_in_their_own_mappings() is True
    warm = torch.ones(64, 2**18)
    del warm
    pins = []
    for _ in range(3):
        block = torch.ones(16, 2**18)  # 16 MiB, touched
        pins.append(torch.ones(64))    # a small block after it on the heap
        held = _read_status_kib("VmRSS")
        del block
        after = _read_status_kib("VmRSS")
        assert held - after > 15 * 1024, (held, after)
