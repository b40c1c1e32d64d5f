"""Property: any mix of channel and unstructured pruning steps saves and reloads bit for bit
(the fresh-process matrix in test_save_load_matrix.py fixes a few sequences; this draws them)."""

from __future__ import annotations

import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pruned import param_count, weights, zero_fraction

import netslim
from netslim.core.history import get_history
from netslim.structural import Channels

X = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))

step = st.one_of(
    st.sampled_from([0.25, 0.5]).map(lambda r: Channels(ratio=r)),
    st.sampled_from([0.25, 0.5]).map(lambda r: Channels(ratio=r, criterion="random", seed=1)),
    st.sampled_from([0.3, 0.6]).map(lambda r: netslim.Unstructured(ratio=r)),
    st.sampled_from([0.3, 0.6]).map(lambda r: netslim.Unstructured(ratio=r, scope="layer")),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=3))
def test_any_mix_of_steps_reloads_bit_identical(steps: list) -> None:
    torch.manual_seed(0)
    model = netslim.build_model("zoo:lenet5").eval()
    for config in steps:
        before = (param_count(model), zero_fraction(weights(model)[:-1]))
        netslim.prune_(model, config, example_inputs=X)
        if isinstance(config, Channels):  # masked or not, it shrinks the model
            assert param_count(model) < before[0], config
        else:  # its ratio: the sparsity to reach, classifier aside (a repeat adds nothing)
            assert zero_fraction(weights(model)[:-1]) >= max(before[1], 0.98 * config.ratio), config
    with tempfile.TemporaryDirectory() as where:
        netslim.save(model, where)
        again = netslim.load(where)
    assert get_history(again) == get_history(model)  # one record per step that did something
    assert len(get_history(model)) >= 1
    got, want = again.state_dict(), model.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    with torch.no_grad():
        assert torch.equal(again(X), model.eval()(X))
