"""Channel pruning of a model that already carries unstructured masks (``core.masks``).

A masked weight is ``original * mask`` computed by a parametrization; its bool mask used to be
locked as an "integer buffer", which locked every channel it touched, so Channels found no group
and pruned nothing. Now the mask is sliced with its weight: the pruned model computes what the
masked original computes with the removed channels zeroed, and every kept mask entry is exact.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import netslim
from netslim.core.masks import attach_mask, get_mask, iter_masks
from netslim.structural import Channels, masked_reference, prune


def _cnn() -> nn.Module:
    # a dense conv, BN, a depthwise conv (its group count follows the channels), a 1x1 conv
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 8, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16, bias=False), nn.ReLU(), nn.Linear(16, 3)
    ).eval()  # fmt: skip


CASES = {"cnn": (_cnn, (2, 3, 8, 8)), "mlp": (_mlp, (2, 6))}
# masked layer -> (group of its rows, group of its columns); the depthwise conv has one column
SLICES = {
    "cnn": {"0": ("0.bias:0", None), "3": ("0.bias:0", None), "5": ("5.bias:0", "0.bias:0")},
    "mlp": {"0": ("0.bias:0", None), "2": ("2.weight:0", "0.bias:0")},
}


@pytest.mark.parametrize("kind", list(CASES))
def test_channels_on_a_masked_model_equals_the_masked_reference(kind: str) -> None:
    torch.manual_seed(0)
    build, shape = CASES[kind]
    model, x = build(), torch.randn(*shape)
    netslim.prune_(model, netslim.Unstructured(ratio=0.5))
    original = copy.deepcopy(model)
    before = {k: m.clone() for k, m in iter_masks(model).items()}
    params = sum(p.numel() for p in model.parameters())
    plan, report = prune(model, (x,), Channels(ratio=0.25))
    assert report["groups"]["pruned"] >= 2, report["groups"]
    assert sum(p.numel() for p in model.parameters()) < params
    reference = masked_reference(original, plan, (x,))
    with torch.no_grad():
        want, got = reference(x), model(x)
        assert (want - original(x)).abs().max() > 1e-4  # channels were removed: the check can fail
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    masks = iter_masks(model)
    assert list(masks) == list(before)  # every masked layer is still masked, nothing else
    # the kept entries are exact: each new (mask, original) pair is the old one sliced by the plan
    for path, (row_group, col_group) in SLICES[kind].items():
        old, new = original.get_submodule(path), model.get_submodule(path)
        w = old.parametrizations.weight.original
        rows = torch.tensor(plan.keep.get(row_group, range(w.shape[0])))
        cols = torch.tensor(plan.keep.get(col_group, range(w.shape[1])))
        assert len(rows) < w.shape[0], path  # every masked layer lost channels
        want_mask = get_mask(old)[rows][:, cols]
        assert get_mask(new).dtype == torch.bool and torch.equal(get_mask(new), want_mask), path
        assert torch.equal(new.parametrizations.weight.original, w[rows][:, cols]), path


def test_a_fully_masked_channel_is_removed_first() -> None:
    """Scores read the weight the forward uses (``original * mask``): a row whose mask is all
    zero is dead whatever its original values, so magnitude criteria remove it first."""
    torch.manual_seed(0)
    model, x = _mlp(), torch.randn(2, 6)
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].weight[5] = 100.0  # the largest original row, masked out entirely
        model[0].bias[5] = 0.0
    mask = torch.ones(16, 6, dtype=torch.bool)
    mask[5] = False
    attach_mask(model[0], "weight", mask)
    plan, _ = prune(model, (x,), Channels(ratio=1 / 16, ignore=("2",)))
    (kept,) = plan.keep.values()
    assert 5 not in kept and len(kept) == 15


def test_group_ids_use_the_plain_weight_name() -> None:
    """A masked weight's groups are named like the unmasked ones (``fc.weight:0``), never
    through ``parametrizations...original``."""
    torch.manual_seed(0)
    model = _mlp()
    netslim.prune_(model, netslim.Unstructured(ratio=0.5))
    plan, _ = prune(model, (torch.randn(2, 6),), Channels(ratio=0.25))
    assert plan.keep and not any("parametrizations" in gid for gid in plan.keep)


class _Head(nn.Module):
    """A container whose ``hidden`` size is read by code outside forward (nothing traces it)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 16
        self.fc = nn.Linear(6, 16, bias=False)
        self.out = nn.Linear(16, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)))


def test_size_attributes_follow_masked_children() -> None:
    """The generic rule (an int equal to a child's parameter dim follows its new size) sees a
    masked child's weight, which is not among that child's direct parameters."""
    torch.manual_seed(0)
    model = _Head().eval()
    for layer in (model.fc, model.out):
        attach_mask(layer, "weight", torch.rand(layer.weight.shape) > 0.3)
    prune(model, (torch.randn(2, 6),), Channels(ratio=0.25))
    assert model.fc.out_features == model.out.in_features == model.hidden == 12


def test_torch_prune_masks_are_refused_before_anything_changes() -> None:
    """``torch.nn.utils.prune`` keeps its mask in a forward hook that channel pruning cannot
    slice: one error naming the tensor and the way out, the model untouched; converted to
    netslim masks, the same model prunes."""
    from torch.nn.utils import prune as torch_prune

    from netslim.errors import UnsupportedModelError
    from netslim.unstructured import from_torch_prune

    torch.manual_seed(0)
    model, x = _mlp(), torch.randn(2, 6)
    torch_prune.l1_unstructured(model[2], "weight", 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match=r"^2\.weight: .*from_torch_prune"):
        prune(model, (x,), Channels(ratio=0.25))
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    from_torch_prune(model)
    _, report = prune(model, (x,), Channels(ratio=0.25))
    assert report["params"]["after"] < report["params"]["before"]
