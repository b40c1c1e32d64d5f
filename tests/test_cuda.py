"""The CUDA code paths end to end: models living on a GPU pruned there.

Skipped without a GPU (CI has none); ``bench/gpu.py`` runs these checks on a lent GPU and
docs/gpu.md records that run. Each case prunes the same weights on CPU too: the GPU must keep
what the CPU keeps.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture
def exact_float32():
    """TF32 off: the comparisons below are to float32 rounding."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _on(model: torch.nn.Module, device: str) -> bool:
    return all(t.device.type == device for t in (*model.parameters(), *model.buffers()))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_structural_pruning_of_a_model_on_the_gpu(exact_float32) -> None:
    torchvision = pytest.importorskip("torchvision")
    from netslim.structural import Channels
    from netslim.structural.verify import prune_and_compare

    torch.manual_seed(0)
    dense = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    on_cpu = copy.deepcopy(dense)
    prune_and_compare(on_cpu, (x,), Channels(ratio=0.5))
    model = copy.deepcopy(dense).cuda()
    diff, _, _ = prune_and_compare(model, (x.cuda(),), Channels(ratio=0.5))
    with torch.no_grad():
        scale = model(x.cuda()).abs().max().item()
    assert diff <= 1e-4 * scale
    assert _params(model) == _params(on_cpu) < _params(dense)
    assert _on(model, "cuda")


CASES = {
    "sparsegpt": dict(method="sparsegpt", sparsity=0.5),
    "wanda 2:4": dict(method="wanda", sparsity=0.5, nm=(2, 4)),
    "width": dict(method="width", sparsity=0.25, head_sparsity=0.5),
}


@pytest.mark.parametrize("case", CASES)
def test_llm_pruning_on_the_gpu(case: str, exact_float32) -> None:
    """Calibration statistics gather on the GPU, and the result matches the CPU's."""
    tiny_hf = pytest.importorskip("tiny_hf")
    from netslim.llm.config import LLMPrune
    from netslim.llm.prune import prune_model

    dense = tiny_hf.tiny_llama()
    ids = torch.randint(0, 100, (8, 32), generator=torch.Generator().manual_seed(2))
    results = {}
    for device in ("cpu", "cuda"):
        model = copy.deepcopy(dense).to(device)
        prune_model(model, LLMPrune(**CASES[case]), ids.to(device))
        assert _on(model, device)
        results[device] = {n: p.detach().cpu() for n, p in model.named_parameters()}
    cpu, gpu = results["cpu"], results["cuda"]
    assert {n: p.shape for n, p in cpu.items()} == {n: p.shape for n, p in gpu.items()}
    agree = sum(((cpu[n] != 0) == (gpu[n] != 0)).sum().item() for n in cpu)
    assert agree >= 0.99 * sum(p.numel() for p in cpu.values())


def test_a_latency_table_point_is_made_on_the_gpu() -> None:
    """A table point's module and input are drawn on the device, not on the CPU and copied
    (at batch 128 the input of a ResNet-50 layer is hundreds of MB)."""
    from netslim.structural import op_timing

    op = op_timing.OpShape("conv", 64, 32, 8, (28, 28), (3, 3), (1, 1), (1, 1), (1, 1))
    module, x = op_timing._torch_module(op, "cuda")
    assert x.is_cuda and _on(module, "cuda")
    assert op_timing.time_torch(op, threads=1, device="cuda") > 0
