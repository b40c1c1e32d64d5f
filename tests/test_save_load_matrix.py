"""Multi-step histories survive save and load in a fresh process, bit for bit (#21).

Each case prunes a zoo CNN with several steps, saves it, and a new Python process loads it and
compares its outputs with the ones the pruning process computed: a replay that skipped or
reordered a step would rebuild the wrong shapes or masks and fail here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netslim
from netslim.structural import Channels

X = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))

CASES = {
    "channels-twice": [Channels(ratio=0.25), Channels(ratio=0.25)],
    "unstructured-then-channels": [netslim.Unstructured(ratio=0.5), Channels(ratio=0.25)],
    "channels-then-unstructured": [Channels(ratio=0.25), netslim.Unstructured(ratio=0.5)],
}


def _zeros(model: torch.nn.Module) -> int:
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, kinds))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_multi_step_history_reloads_bit_identical_in_a_fresh_process(
    steps: list, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = netslim.build_model("zoo:lenet5").eval()
    for config in steps:  # every step must do something: shrink the model or zero weights
        before = (_params(model), _zeros(model))
        netslim.prune_(model, config, example_inputs=X)
        if isinstance(config, Channels):
            assert _params(model) < before[0], f"{config} pruned nothing"
        else:
            assert _zeros(model) > before[1], f"{config} zeroed nothing"
    with torch.no_grad():
        torch.save(model.eval()(X), tmp_path / "expected.pt")
    torch.save(X, tmp_path / "x.pt")
    netslim.save(model, tmp_path / "out")
    code = (
        "import torch, netslim;"
        f"m = netslim.load({str(tmp_path / 'out')!r}).eval();"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True);"
        f"e = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True);"
        "torch.set_num_threads(1);"
        "assert torch.equal(m(x), e), (m(x) - e).abs().max()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
