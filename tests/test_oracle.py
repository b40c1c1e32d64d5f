"""An oracle that shares no code with the engine: a small residual CNN whose channels to remove
are fixed by construction, and the smaller model built by hand (plain torch: the same class at
the smaller widths, every tensor sliced with ``index_select`` from a table written here). The
model netslim prunes must equal it: same layers and widths, the same tensors bit for bit, the
same outputs. The equivalence tests elsewhere compare with ``masked_reference``, which builds
its masks from the engine's own analysis; a coupling error shared by both would pass them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netslim
from netslim.structural import Channels

WIDTHS = {"R": 8, "A": 8, "B": 16, "C": 16}  # residual stream, block 1 inside, block 2 in/out
# The plan: half of every group goes; which half differs per group (and is not a prefix).
REMOVE = {
    "R": [1, 4, 6, 7],
    "A": [0, 3, 5, 6],
    "B": [1, 2, 4, 7, 8, 11, 13, 14],
    "C": list(range(0, 16, 2)),
}


class TinyResNet(nn.Module):
    """stem, an identity block (add), a down-sampling block with a 1x1 projection (add), fc."""

    def __init__(self, R: int = 8, A: int = 8, B: int = 16, C: int = 16, classes: int = 5):
        super().__init__()
        conv = lambda i, o, k=3, s=1: nn.Conv2d(i, o, k, s, padding=k // 2, bias=False)  # noqa: E731
        self.stem, self.bn0 = conv(3, R), nn.BatchNorm2d(R)
        self.b1c1, self.b1bn1 = conv(R, A), nn.BatchNorm2d(A)
        self.b1c2, self.b1bn2 = conv(A, R), nn.BatchNorm2d(R)
        self.b2c1, self.b2bn1 = conv(R, B, s=2), nn.BatchNorm2d(B)
        self.b2c2, self.b2bn2 = conv(B, C), nn.BatchNorm2d(C)
        self.short, self.shortbn = conv(R, C, k=1, s=2), nn.BatchNorm2d(C)
        self.fc = nn.Linear(C, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.b1bn2(self.b1c2(F.relu(self.b1bn1(self.b1c1(x))))))
        y = self.b2bn2(self.b2c2(F.relu(self.b2bn1(self.b2c1(x)))))
        x = F.relu(y + self.shortbn(self.short(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# Which group indexes each tensor's dim 0 (outputs) and dim 1 (inputs); None: not pruned.
# Written from the architecture, not from netslim: the adds tie stem/b1c2 and b2c2/short.
SLICES = {
    "stem.weight": ("R", None),
    "b1c1.weight": ("A", "R"),
    "b1c2.weight": ("R", "A"),
    "b2c1.weight": ("B", "R"),
    "b2c2.weight": ("C", "B"),
    "short.weight": ("C", "R"),
    "fc.weight": (None, "C"),
    "fc.bias": (None, None),
}
for _bn, _g in {
    "bn0": "R",
    "b1bn1": "A",
    "b1bn2": "R",
    "b2bn1": "B",
    "b2bn2": "C",
    "shortbn": "C",
}.items():
    for _leaf in ("weight", "bias", "running_mean", "running_var"):
        SLICES[f"{_bn}.{_leaf}"] = (_g, None)
    SLICES[f"{_bn}.num_batches_tracked"] = (None, None)
# The residual branch's side of each add: its conv gets the opposite scaling and its BN the
# same gamma and beta on every channel (see _build).
BRANCH_CONVS, BRANCH_BNS = ("b1c2.weight", "b2c2.weight"), ("b1bn2", "b2bn2")


def _kept(group: str) -> torch.Tensor:
    return torch.tensor([i for i in range(WIDTHS[group]) if i not in REMOVE[group]])


def _build(dead: bool) -> TinyResNet:
    """Random weights and BN statistics; the indices in REMOVE are made the least important.

    dead: their slices are zero in every tensor (the channels compute nothing), so removing
    them must leave the output unchanged. Otherwise their slices are scaled by 0.01, except in
    the conv on the residual branch's side of each add, whose *kept* outputs are scaled by 0.3
    instead (that branch's BN is the same on every channel): ranked alone, that side would
    remove the other half, so only a group coupled across the add picks REMOVE."""
    torch.manual_seed(0)
    model = TinyResNet()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                if name in BRANCH_BNS and not dead:
                    m.weight.fill_(1.0)
                    m.bias.fill_(0.2)
        state = model.state_dict()
        for name, dims in SLICES.items():
            if "running" in name or (not dead and name.split(".")[0] in BRANCH_BNS):
                continue
            for dim, group in enumerate(dims):
                if group is None:
                    continue
                if dead:
                    idx, scale = torch.tensor(REMOVE[group]), 0.0
                elif name in BRANCH_CONVS and dim == 0:  # the add's branch side: reversed
                    idx, scale = _kept(group), 0.3
                else:
                    idx, scale = torch.tensor(REMOVE[group]), 0.01
                state[name].index_copy_(dim, idx, state[name].index_select(dim, idx) * scale)
    return model.eval()


def _hand_sliced(model: TinyResNet) -> TinyResNet:
    small = TinyResNet(**{g: WIDTHS[g] - len(REMOVE[g]) for g in WIDTHS})
    state = {}
    for name, tensor in model.state_dict().items():
        for dim, group in enumerate(SLICES[name]):
            if group is not None:
                tensor = tensor.index_select(dim, _kept(group))
        state[name] = tensor
    small.load_state_dict(state, strict=True)
    return small.eval()


@pytest.mark.parametrize("dead", [False, True], ids=["least-important", "dead"])
def test_pruned_residual_net_equals_the_hand_sliced_one(dead: bool) -> None:
    model = _build(dead)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        original = model(x)
    want = _hand_sliced(model)
    netslim.prune_(model, Channels(ratio=0.5, criterion="l2"), example_inputs=(x,))
    assert repr(model) == repr(want)  # every layer at the hand-computed width
    got_state, want_state = model.state_dict(), want.state_dict()
    assert list(got_state) == list(want_state)
    for name, tensor in want_state.items():
        assert torch.equal(got_state[name], tensor), name
    with torch.no_grad():
        got, hand = model(x), want(x)
    assert torch.equal(got, hand)
    if dead:  # removing channels that compute nothing changes nothing
        torch.testing.assert_close(got, original, rtol=0, atol=1e-6)
    else:  # the removed channels did contribute: got == hand is not got == original
        assert (got - original).abs().max() > 1e-4


# -- an attention block: whole heads and MLP units, sliced by hand ---------------------------------
HEADS, HEAD_SIZE, DIM, HIDDEN = 3, 4, 12, 16
GONE_HEADS, GONE_UNITS = [1], [0, 2, 3, 6, 9, 10, 12, 15]  # kept: heads 0 and 2, 8 units


class TinyBlock(nn.Module):
    """Pre-norm transformer block, HF-style attention (q/k/v, heads by attribute, SDPA)."""

    def __init__(self, heads: int = HEADS, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, HEAD_SIZE
        inner = heads * HEAD_SIZE
        self.embed, self.ln1, self.ln2 = nn.Linear(5, DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.q, self.k, self.v = nn.Linear(DIM, inner), nn.Linear(DIM, inner), nn.Linear(DIM, inner)
        self.o = nn.Linear(inner, DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, hidden), nn.Linear(hidden, DIM)
        self.out = nn.Linear(DIM, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, n, _ = x.shape
        h = self.ln1(x)
        q, k, v = (
            p(h).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            for p in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.o(y)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.out(x.mean(1))


def _head_rows(heads: list[int]) -> torch.Tensor:
    return torch.tensor([h * HEAD_SIZE + i for h in heads for i in range(HEAD_SIZE)])


KEPT_ROWS = _head_rows([h for h in range(HEADS) if h not in GONE_HEADS])
KEPT_UNITS = torch.tensor([u for u in range(HIDDEN) if u not in GONE_UNITS])
# (tensor, dim, kept indices along it): everything the removal touches, written by hand
BLOCK_SLICES = [(f"{p}.{leaf}", 0, KEPT_ROWS) for p in "qkv" for leaf in ("weight", "bias")]
BLOCK_SLICES += [("o.weight", 1, KEPT_ROWS), ("fc1.weight", 0, KEPT_UNITS)]
BLOCK_SLICES += [("fc1.bias", 0, KEPT_UNITS), ("fc2.weight", 1, KEPT_UNITS)]


def _block() -> TinyBlock:
    """Head 1 of 3 and 8 of 16 MLP units made the least important (their slices x0.02)."""
    torch.manual_seed(0)
    model = TinyBlock().eval()
    with torch.no_grad():
        for m in (model.ln1, model.ln2):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
        state = model.state_dict()
        for name, dim, kept in BLOCK_SLICES:
            t = state[name]
            gone = torch.tensor([i for i in range(t.shape[dim]) if i not in kept.tolist()])
            t.index_copy_(dim, gone, t.index_select(dim, gone) * 0.02)
    return model


def _hand_sliced_block(model: TinyBlock) -> TinyBlock:
    want = TinyBlock(heads=HEADS - len(GONE_HEADS), hidden=HIDDEN - len(GONE_UNITS)).eval()
    sliced = dict(model.state_dict())
    for name, dim, kept in BLOCK_SLICES:
        sliced[name] = sliced[name].index_select(dim, kept)
    want.load_state_dict(sliced, strict=True)
    return want


# the model width (the residual stream) is kept through per_module
BLOCK_CONFIG = Channels(ratio=0.5, criterion="l2", per_module={"embed": 0.0})


def test_pruned_attention_block_equals_the_hand_sliced_one() -> None:
    model = _block()
    want = _hand_sliced_block(model)
    x = torch.randn(2, 6, 5)
    netslim.prune_(model, BLOCK_CONFIG, example_inputs=(x,))
    assert repr(model) == repr(want)
    assert (model.num_heads, model.head_dim) == (2, HEAD_SIZE)
    got_state = model.state_dict()
    assert list(got_state) == list(want.state_dict())
    for name, tensor in want.state_dict().items():
        assert torch.equal(got_state[name], tensor), name
    with torch.no_grad():
        assert torch.equal(model(x), want(x))
        assert model(torch.randn(3, 4, 5)).shape == (3, 3)


# -- the equivalence tests' own oracle, against masks applied by hand -------------------------------
def _masked_by_hand(kind: str, model: nn.Module) -> nn.Module:
    """The full-width model with every slice of a removed channel zeroed (from the tables above;
    a zero BN gamma and beta make a channel output exactly 0, whatever its statistics)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if kind == "resnet":
        for name, dims in SLICES.items():
            if "running" in name:
                continue
            for dim, group in enumerate(dims):
                if group is not None:
                    state[name].index_fill_(dim, torch.tensor(REMOVE[group]), 0.0)
    else:
        for name, dim, kept in BLOCK_SLICES:
            gone = [i for i in range(state[name].shape[dim]) if i not in kept.tolist()]
            state[name].index_fill_(dim, torch.tensor(gone), 0.0)
    masked = type(model)().eval()
    masked.load_state_dict(state, strict=True)
    return masked


@pytest.mark.parametrize("kind", ["resnet", "block"])
def test_masked_reference_equals_masks_applied_by_hand(kind: str) -> None:
    """``masked_reference`` (what every structural equivalence test compares with) builds its
    masks from the engine's analysis; here the same plan's masks are applied by hand."""
    from netslim.structural import masked_reference, prune

    if kind == "resnet":
        model, x, config = _build(dead=False), torch.randn(4, 3, 16, 16), Channels(ratio=0.5)
    else:
        model, x, config = _block(), torch.randn(2, 6, 5), BLOCK_CONFIG
    hand = _masked_by_hand(kind, model)
    original = copy.deepcopy(model)
    plan, _ = prune(model, (x,), config)
    reference = masked_reference(original, plan, (x,))
    with torch.no_grad():
        want, got = hand(x), reference(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        # unmasked, the output differs by more than 10x that tolerance: the check can fail
        assert (want - original(x)).abs().max() > 1e-5
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5)  # and the pruned model


# -- vgg_small: conv stages and the flatten that ties each last channel to 7x7 classifier inputs --
VGG_CFG = (8, "M", 16, "M", 12)  # 28 -> 14 -> 7: the classifier reads 12 x 49 inputs
VGG_GONE = ([0, 3, 4, 6], [1, 2, 5, 7, 9, 10, 12, 15], [0, 1, 4, 8, 10, 11])  # half of each conv


def _vgg_slices(model: nn.Module) -> list[tuple[str, int, list[int]]]:
    """(tensor, dim, kept indices) for every tensor the plan touches, derived by hand: conv i's
    rows, its BN, conv i+1's columns; the last stage's channel c owns classifier columns
    c*49 .. c*49+48 (flatten is channel-major)."""
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    out = []
    for stage, (i, gone) in enumerate(zip(convs, VGG_GONE, strict=True)):
        kept = [c for c in range(model.features[i].out_channels) if c not in gone]
        out.append((f"features.{i}.weight", 0, kept))
        out += [(f"features.{i + 1}.{leaf}", 0, kept) for leaf in ("weight", "bias")]
        out += [(f"features.{i + 1}.{leaf}", 0, kept) for leaf in ("running_mean", "running_var")]
        if stage + 1 < len(convs):
            out.append((f"features.{convs[stage + 1]}.weight", 1, kept))
        else:
            out.append(("classifier.weight", 1, [c * 49 + p for c in kept for p in range(49)]))
    return out


def test_pruned_vgg_small_equals_the_hand_sliced_one() -> None:
    torch.manual_seed(0)
    model = netslim.build_model("zoo:vgg_small", cfg=VGG_CFG).eval()
    slices = _vgg_slices(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        state = model.state_dict()
        for name, dim, kept in slices:  # the removed indices made the least important
            if "running" not in name:
                t = state[name]
                gone = torch.tensor([i for i in range(t.shape[dim]) if i not in kept])
                t.index_copy_(dim, gone, t.index_select(dim, gone) * 0.01)
    widths = iter(
        c - len(g) for c, g in zip((c for c in VGG_CFG if c != "M"), VGG_GONE, strict=True)
    )
    small_cfg = tuple(c if c == "M" else next(widths) for c in VGG_CFG)
    want = netslim.build_model("zoo:vgg_small", cfg=small_cfg).eval()
    sliced = dict(model.state_dict())
    for name, dim, kept in slices:
        sliced[name] = sliced[name].index_select(dim, torch.tensor(kept))
    want.load_state_dict(sliced, strict=True)

    x = torch.randn(2, 1, 28, 28)
    netslim.prune_(model, Channels(ratio=0.5, criterion="l2"), example_inputs=(x,))
    assert repr(model) == repr(want)
    got_state = model.state_dict()
    for name, tensor in want.state_dict().items():
        assert torch.equal(got_state[name], tensor), name
    with torch.no_grad():
        assert torch.equal(model(x), want(x))
