"""The streaming path's allocator policy: set for the pass, put back after it, even on error."""

from __future__ import annotations

import pytest

from netslim.llm import heap


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", (param, value)))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", (pad,)))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(heap, "_LIBC", fake)
    return fake


def test_threshold_is_set_for_the_pass_and_put_back(libc):
    with heap.large_buffers_mapped():
        assert libc.calls == [("mallopt", (heap.M_MMAP_THRESHOLD, heap.STREAMING_MMAP_THRESHOLD))]
    assert libc.calls[-1] == ("mallopt", (heap.M_MMAP_THRESHOLD, heap.GLIBC_MAX_MMAP_THRESHOLD))


def test_threshold_is_put_back_when_the_pass_fails(libc):
    with pytest.raises(RuntimeError), heap.large_buffers_mapped(1 << 20):
        raise RuntimeError("block 3 failed")
    assert [c[1][1] for c in libc.calls] == [1 << 20, heap.GLIBC_MAX_MMAP_THRESHOLD]


def test_without_glibc_the_pass_still_runs(monkeypatch):
    monkeypatch.setattr(heap, "_LIBC", False)
    ran = []
    with heap.large_buffers_mapped():
        heap.return_freed_memory()
        ran.append(True)
    assert ran == [True]
    with pytest.raises(RuntimeError, match="block 1"), heap.large_buffers_mapped():
        raise RuntimeError("block 1 failed")  # errors pass through unchanged


def test_streaming_sets_the_policy(libc, tmp_path):
    import torch

    pytest.importorskip("transformers")
    import tiny_hf

    from netslim.llm import LLMPrune, prune_streaming

    tiny_hf.tiny_llama().save_pretrained(tmp_path / "src")
    calib = torch.randint(0, 100, (4, 16))
    prune_streaming(tmp_path / "src", tmp_path / "out", LLMPrune("wanda", 0.5), calib)
    values = [c[1][1] for c in libc.calls if c[0] == "mallopt"]
    assert values == [heap.STREAMING_MMAP_THRESHOLD, heap.GLIBC_MAX_MMAP_THRESHOLD]
    assert ("malloc_trim", (0,)) in libc.calls
