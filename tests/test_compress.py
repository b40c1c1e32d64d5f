"""The compressed artifact: bit-exact round trips, lossy modes within their step, corruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import netslim
from netslim.compress import (
    compress,
    decode_tensor,
    decompress,
    encode_tensor,
    read_tensors,
    varint,
)
from netslim.core.masks import iter_masks
from netslim.errors import ArtifactError, ConfigError

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int8,
    torch.bool,
]


@st.composite
def sparse_tensors(draw):
    shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    density = draw(st.sampled_from([0.0, 0.02, 0.3, 0.9, 1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(shape, generator=gen, dtype=torch.float64) * 10
    keep = torch.rand(shape, generator=gen) < density
    return (values * keep).to(dtype)


def _roundtrip(tensor, **kwargs):
    entry, blobs = encode_tensor(tensor, **kwargs)
    return entry, decode_tensor(entry, blobs)


@settings(max_examples=150, deadline=None)
@given(sparse_tensors(), st.sampled_from(["auto", "bitmap", "delta"]))
def test_exact_mode_is_bit_exact(tensor: torch.Tensor, positions: str) -> None:
    _, (decoded, _) = _roundtrip(tensor, values="exact", positions=positions)
    assert decoded.dtype == tensor.dtype and decoded.shape == tensor.shape
    assert torch.equal(decoded.view(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


@settings(max_examples=60, deadline=None)
@given(sparse_tensors(), st.sampled_from(["int8", "int8-channel", "float16"]))
def test_lossy_modes_keep_positions_and_stay_within_a_step(tensor: torch.Tensor, mode: str) -> None:
    mask = tensor != 0
    entry, (decoded, keep) = _roundtrip(tensor, mask=mask, values=mode)
    assert torch.equal(keep, mask)
    assert torch.all(decoded[~mask] == 0)
    if entry["values"] == "exact":  # lossy modes only touch >= 2-D floating tensors
        assert torch.equal(decoded, tensor)
        return
    ref = tensor.double()
    err = (decoded.double() - ref).abs()
    if mode == "float16":
        assert torch.all(err <= ref.abs() * 2**-10 + 1e-7)
    else:
        bound = ref.abs().amax() / 127 / 2 * 1.001 + 1e-12  # per-channel steps are never larger
        # decoding returns the original dtype, whose own rounding (bf16: 8 bits) adds to the step
        rounding = (ref.abs() + bound) * torch.finfo(tensor.dtype).eps
        assert torch.all(err <= bound + rounding)


@settings(max_examples=60, deadline=None)
@given(sparse_tensors(), st.sampled_from(["shared4", "shared5", "shared6"]))
def test_shared_values_keep_positions_and_snap_to_centroids(
    tensor: torch.Tensor, mode: str
) -> None:
    """Every kept value decodes to one of at most 2^bits centroids, and the squared error is no
    larger than snapping to an even grid over the value range (Lloyd's iterations start there
    and never increase it)."""
    mask = tensor != 0
    entry, (decoded, keep) = _roundtrip(tensor, mask=mask, values=mode)
    assert torch.equal(keep, mask) and torch.all(decoded[~mask] == 0)
    if entry["values"] == "exact":  # 1-D, integer, or no more values than centroids
        assert torch.equal(decoded, tensor)
        return
    clusters = 2 ** int(mode[-1])
    kept, got = tensor[mask].float(), decoded[mask].float()
    assert got.unique().numel() <= clusters
    grid = torch.linspace(float(kept.min()), float(kept.max()), clusters)
    snapped = grid[(kept[:, None] - grid).abs().argmin(1)]
    slack = 1e-4 * kept.square().sum() + 1e-6  # float32 sums, and the dtype's own rounding
    assert (got - kept).square().sum() <= (snapped - kept).square().sum() + slack


def test_shared_values_beat_linear_quantization_in_squared_error() -> None:
    from netslim.compress.codec import shared_values

    values = torch.randn(5000) ** 3  # heavy tails, like trained weights
    centroids, codes = shared_values(values, 16)
    kmeans_err = (centroids[codes.long()] - values).square().mean()
    grid = torch.linspace(float(values.min()), float(values.max()), 16)
    linear_err = (grid[(values[:, None] - grid).abs().argmin(1)] - values).square().mean()
    assert kmeans_err < linear_err and codes.dtype == torch.uint8


def test_decoding_is_deterministic_from_the_entry() -> None:
    tensor = torch.randn(16, 32) * (torch.rand(16, 32) < 0.1)
    entry, blobs = encode_tensor(tensor, values="int8-channel")
    a, _ = decode_tensor(entry, blobs)
    b, _ = decode_tensor(dict(entry), dict(blobs))
    assert torch.equal(a, b)


@given(st.lists(st.integers(0, 2**64 - 1), max_size=200))
def test_varint_roundtrip(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint64)
    assert np.array_equal(varint.decode(varint.encode(array), len(values)), array)


def test_varint_rejects_wrong_counts() -> None:
    data = varint.encode(np.array([1, 300, 5], dtype=np.uint64))
    with pytest.raises(ValueError):
        varint.decode(data, 2)
    with pytest.raises(ValueError):
        varint.decode(data[:-1], 3)


def test_unknown_modes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="values"):
        encode_tensor(torch.ones(2, 2), values="int4")
    with pytest.raises(ConfigError, match="positions"):
        encode_tensor(torch.ones(2, 2), positions="rle")


@pytest.fixture
def pruned_lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = netslim.build_model("zoo:lenet300")
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.bias, std=0.1)
    netslim.prune_(model, netslim.Unstructured(ratio=0.95))
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros > 0.9, "the fixture must be pruned: every test below relies on its zeros"
    return model


def test_model_roundtrip_exact_keeps_masks_and_outputs(pruned_lenet, tmp_path: Path) -> None:
    report = compress(pruned_lenet, tmp_path / "m.nsz", values="exact")
    assert report.bytes == (tmp_path / "m.nsz").stat().st_size
    loaded = decompress(tmp_path / "m.nsz")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned_lenet(x))
    before, after = iter_masks(pruned_lenet), iter_masks(loaded)
    assert list(before) == list(after)
    assert all(torch.equal(before[k].bool(), after[k].bool()) for k in before)


def test_shared_artifact_is_smaller_than_int8(pruned_lenet, tmp_path: Path) -> None:
    int8 = compress(pruned_lenet, tmp_path / "a.nsz", values="int8-channel")
    shared = compress(pruned_lenet, tmp_path / "b.nsz", values="shared5")
    assert shared.bytes < int8.bytes
    loaded = decompress(tmp_path / "b.nsz")
    assert len(loaded[1].weight.unique()) <= 32 + 1  # 32 centroids and the pruned zeros


def test_int8_artifact_is_small_and_close(pruned_lenet, tmp_path: Path) -> None:
    report = compress(pruned_lenet, tmp_path / "m.nsz", values="int8-channel")
    assert report.ratio > 25  # 95% sparse + int8 + zstd (the bench reaches 40x on trained weights)
    loaded = decompress(tmp_path / "m.nsz")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        ref = pruned_lenet(x)
        assert (loaded(x) - ref).abs().max() < 0.05 * ref.abs().max()
    assert set(read_tensors(tmp_path / "m.nsz")) == {
        "1.weight",
        "1.bias",
        "3.weight",
        "3.bias",
        "5.weight",
        "5.bias",
    }


@pytest.mark.parametrize("where", ["magic", "header", "body", "tail", "truncate", "empty"])
def test_corrupt_files_raise_artifact_error(pruned_lenet, tmp_path: Path, where: str) -> None:
    path = tmp_path / "m.nsz"
    compress(pruned_lenet, path)
    data = bytearray(path.read_bytes())
    if where == "magic":
        data[0] ^= 0xFF
    elif where == "header":
        data[10] ^= 0x01  # inside the stored checksum
    elif where == "body":
        data[len(data) // 2] ^= 0x40
    elif where == "tail":
        data[-1] ^= 0x01
    elif where == "truncate":
        data = data[: len(data) - 100]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        decompress(path)
    with pytest.raises(ArtifactError):
        read_tensors(path)


def test_missing_file_and_no_spec(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        decompress(tmp_path / "nope.nsz")
    with pytest.raises(ConfigError, match="spec"):
        compress(torch.nn.Linear(2, 2), tmp_path / "x.nsz")


def test_cli_compress(pruned_lenet, tmp_path: Path, capsys) -> None:
    from netslim.cli.main import main

    netslim.save(pruned_lenet, tmp_path / "model")
    assert main(["compress", str(tmp_path / "model"), "--values", "float16"]) == 0
    assert "smaller than the dense float32" in capsys.readouterr().out
    back = decompress(tmp_path / "model" / "model.nsz")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():  # float16 values: close to the original, and the zeros stay zeros
        torch.testing.assert_close(back(x), pruned_lenet.eval()(x), atol=1e-2, rtol=1e-2)
    linears = [
        (a.weight, b.weight)
        for a, b in zip(back.modules(), pruned_lenet.modules(), strict=True)
        if isinstance(a, torch.nn.Linear)
    ]
    assert len(linears) == 3 and all(torch.equal(a == 0, b == 0) for a, b in linears)
    (tmp_path / "model" / "model.nsz").write_bytes(b"NSLZ\x00junk")
    assert main(["compress", str(tmp_path / "nothing")]) == 2
