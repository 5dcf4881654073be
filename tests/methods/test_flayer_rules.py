"""Each FLAYER rule on tiny tensors, against hand-computed expectations."""

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from torch import nn

from flayer.algorithm import masking
from flayer.algorithm.initialization import mix_into
from flayer.algorithm.rates import EPS, adapt_rates, initial_rates, layer_rate
from flayer.nn.layers import LayerMap
from flayer.protocol.aggregation import Contribution, aggregate
from flayer.protocol.upload import Upload, decode, encode


class Tiny(nn.Module):
    """Four layers: conv, conv, linear, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(2, 2, 3)
        self.c = nn.Linear(8, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.b(self.a(x)).flatten(1)
        return self.head(self.c(x))


# ---- mixing ---------------------------------------------------------------------------------
def test_mix_copies_lower_tensors_and_mixes_top_p():
    model = Tiny()
    local = {n: p.detach().clone() for n, p in model.named_parameters()}
    glob = {n: np.full(tuple(p.shape), 2.0, dtype=np.float32) for n, p in model.named_parameters()}
    top = ("head.weight", "head.bias")
    mix_into(model, glob, top, a=0.25)
    for name, p in model.named_parameters():
        if name in top:
            expected = 0.25 * local[name] + 0.75 * 2.0
        else:
            expected = torch.full_like(p, 2.0)
        torch.testing.assert_close(p.detach(), expected)


def test_mix_with_a_zero_is_a_pure_copy():
    model = Tiny()
    glob = {n: np.random.rand(*p.shape).astype(np.float32) for n, p in model.named_parameters()}
    mix_into(model, glob, ("head.weight", "head.bias"), a=0.0)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), glob[name])


# ---- learning rates -------------------------------------------------------------------------
def test_layer_rate_formula():
    # c * eta * (1 + (l / s) * ln(1 + 1 / g)), averaged over the layer's tensors
    eta, s, c = 0.01, 3.0, 20.0
    expected = np.mean([c * eta * (1 + (2 / s) * math.log(1 + 1 / g)) for g in (0.5, 2.0)])
    assert layer_rate(2, [0.5, 2.0], eta, s, c) == pytest.approx(expected, rel=1e-12)


def hand_rate(layer: int, norms: list[float], eta: float, s: float, c: float) -> float:
    """FLAYER.md's rate written out: the mean over the layer's tensors of
    c * eta * (1 + (l / s) * ln(1 + 1 / ||grad||)) (a mean of rates, not of norms)."""
    return sum(c * eta * (1 + (layer / s) * math.log(1 + 1 / g)) for g in norms) / len(norms)


def test_adapt_rates_fixes_both_ends_and_adapts_the_middle():
    model = Tiny()
    layers = LayerMap(model)
    norms = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        p.grad = torch.full_like(p, 0.1 * (i + 1))  # each tensor its own gradient norm
        norms[name] = 0.1 * (i + 1) * math.sqrt(p.numel())
    eta, h, s, c = 0.005, 0.2, 3.0, 20.0
    rates = adapt_rates(model, layers, [9.0, 9.0, 9.0, 9.0], eta, h, s, c)
    assert rates[0] == eta and rates[3] == pytest.approx(eta * h)
    # layer 1 = b (grads 0.3 over 36 weights, 0.4 over 2 biases), layer 2 = c (0.5 over 32, 0.6
    # over 4)
    assert norms["b.weight"] == pytest.approx(0.3 * 6) and norms["c.bias"] == pytest.approx(1.2)
    for layer, names in ((1, ("b.weight", "b.bias")), (2, ("c.weight", "c.bias"))):
        expected = hand_rate(layer, [norms[n] for n in names], eta, s, c)
        assert rates[layer] == pytest.approx(expected, rel=1e-6)
    # e.g. layer 1: 20 * 0.005 * (1 + (1/3) * mean(ln(1 + 1/1.8), ln(1 + 1/(0.4 sqrt 2))))
    assert rates[1] == pytest.approx(0.1 * (1 + (math.log(1 + 1 / 1.8) + math.log(
        1 + 1 / (0.4 * math.sqrt(2)))) / 6), rel=1e-6)


def test_adapt_rates_guards_a_zero_gradient():
    # ||grad|| = 0 would divide by zero: the rate is the formula's at ||grad|| = EPS, large
    # (a flat layer takes big steps) but finite
    model = Tiny()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    eta, h, s, c = 0.01, 0.2, 3.0, 1.0
    rates = adapt_rates(model, LayerMap(model), [1.0] * 4, eta, h, s, c)
    assert rates[0] == eta and rates[3] == pytest.approx(eta * h)
    for layer in (1, 2):
        assert rates[layer] == pytest.approx(c * eta * (1 + (layer / s) * math.log(1 + 1 / EPS)))
        assert rates[layer] > hand_rate(layer, [1e-6], eta, s, c)  # beyond any real gradient's
    assert rates[1] == pytest.approx(0.01 * (1 + math.log(1 + 1e12) / 3), rel=1e-6)


def test_adapt_rates_averages_over_the_tensors_that_have_a_gradient():
    model = Tiny()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.b.bias.grad = None  # no gradient: left out of layer 1's mean
    model.c.weight.grad = model.c.bias.grad = None  # no gradient at all: layer 2 keeps its rate
    rates = adapt_rates(model, LayerMap(model), [7.0] * 4, 0.01, 0.2, 3.0, 20.0)
    assert rates[1] == pytest.approx(hand_rate(1, [6.0], 0.01, 3.0, 20.0))  # ||1 (36 of them)||
    assert rates[2] == 7.0


def test_initial_rates():
    assert initial_rates(4, 0.01, 0.2, adaptive=True) == [0.01, 0.01, 0.01, 0.01 * 0.2]
    assert initial_rates(4, 0.01, 0.2, adaptive=False) == [0.01] * 4
    quirky = initial_rates(4, 0.01, 0.2, adaptive=True, quirk_multipliers=[1, 30, 40, 0.2])
    assert quirky == pytest.approx([0.01, 0.3, 0.4, 0.002])


# ---- masks ----------------------------------------------------------------------------------
def test_withheld_fraction_clamps_and_is_float64():
    assert masking.withheld_fraction(0, 8) == pytest.approx(0.9)
    assert masking.withheld_fraction(3, 8) == pytest.approx(1 - 3 / 8)
    assert masking.withheld_fraction(7, 8) == pytest.approx(0.125)
    assert masking.withheld_fraction(9, 10) == pytest.approx(0.1)
    # the 1x1 example of the spec: tensor 21 of 62 withholds 42 of 64 per output channel
    assert masking.withheld_fraction(21, 62) == pytest.approx(1 - 21 / 62)
    assert masking.kept_count(21, (128, 64, 1, 1), 62) == 128 * (64 - 42)


@pytest.mark.parametrize(
    ("k", "j", "J", "withheld"),
    [
        (5, 1, 10, 22),  # m = 0.9: 25 * 0.9 = 22.5 -> 22 (half to even)
        (3, 5, 10, 4),  # m = 0.5: 9 * 0.5 = 4.5 -> 4 (half to even)
        (3, 3, 10, 6),  # m = 0.7: 6.3 -> 6
        (2, 0, 10, 3),  # m = 0.9: 3.6 -> 4, clamped to k*k - 1 = 3
        (2, 9, 12, 1),  # m = 0.25: 1.0 -> 1
        (3, 27, 30, 1),  # m = 0.1: 0.9 -> 1
        (2, 36, 40, 1),  # m = 0.1: 0.4 -> 0, clamped to 1
    ],
)
def test_per_kernel_withheld_counts(k, j, J, withheld):
    assert masking.withheld_per_group(k * k, masking.withheld_fraction(j, J)) == withheld
    shape = (2, 3, k, k)
    change = np.random.default_rng(0).random(shape)
    mask = masking.keep_mask(change, j, J)
    assert mask.reshape(6, k * k).sum(axis=1).tolist() == [k * k - withheld] * 6
    assert masking.kept_count(j, shape, J) == 6 * (k * k - withheld)
    # the withheld ones are each kernel's smallest changes
    for kernel, kept in zip(change.reshape(6, -1), mask.reshape(6, -1), strict=True):
        assert kernel[~kept].max() <= kernel[kept].min()


def test_kernel_mask_withholds_the_smallest_changes_per_kernel():
    J = 10
    j = 3  # m = 0.7: 9 * 0.7 = 6.3 -> withhold 6 of 9 per 3x3 kernel
    change = np.arange(2 * 2 * 9, dtype=np.float64)[::-1].reshape(2, 2, 3, 3)
    mask = masking.keep_mask(change, j, J)
    assert mask.shape == change.shape
    for o in range(2):
        for i in range(2):
            kernel = change[o, i].ravel()
            kept = mask[o, i].ravel()
            assert kept.sum() == 3
            assert set(np.flatnonzero(kept)) == set(np.argsort(kernel)[-3:])
    assert masking.kept_count(j, change.shape, J) == 4 * 3


def test_ties_withhold_the_smaller_flat_index_first():
    mask = masking.keep_mask(np.zeros((1, 1, 3, 3)), 3, 10)  # withhold 6 of 9
    np.testing.assert_array_equal(mask.ravel(), [False] * 6 + [True] * 3)


def test_one_dimensional_tensors_use_the_whole_tensor():
    J, j = 10, 5  # m = 0.5: 10 * 0.5 = 5
    change = np.array([5.0, 1, 9, 3, 7, 0, 2, 8, 6, 4])
    mask = masking.keep_mask(change, j, J)
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 2, 4, 7, 8])
    assert masking.kept_count(j, (10,), J) == 5
    # clamp to [1, n - 1]: m = 0.9 of 2 elements rounds to 2 -> 1 withheld
    assert masking.kept_count(0, (2,), J) == 1
    assert masking.keep_mask(np.zeros(1), 0, J) is None  # one element: nothing to withhold


def test_two_dimensional_tensors_and_the_last_two_go_in_full():
    assert masking.keep_mask(np.random.rand(4, 5), 2, 10) is None
    assert masking.kept_count(2, (4, 5), 10) is None
    assert masking.keep_mask(np.random.rand(4, 1, 3, 3), 8, 10) is None  # second to last
    assert masking.keep_mask(np.random.rand(4), 9, 10) is None  # last


def test_one_by_one_convolution_fix_and_quirk():
    J, j = 10, 3  # m = 0.7
    change = np.random.default_rng(1).random((4, 6, 1, 1))
    fixed = masking.keep_mask(change, j, J)
    # fix: per output channel, the 1-D rule over its 6 weights: round(4.2) = 4 withheld
    assert fixed.reshape(4, 6).sum(axis=1).tolist() == [2, 2, 2, 2]
    for o in range(4):
        assert set(np.flatnonzero(fixed[o].ravel())) == set(np.argsort(change[o].ravel())[-2:])
    assert masking.kept_count(j, (4, 6, 1, 1), J) == 8
    quirky = masking.keep_mask(change, j, J, reference_quirks=True)
    assert not quirky.any()  # the reference withholds the whole kernel
    assert masking.kept_count(j, (4, 6, 1, 1), J, reference_quirks=True) == 0


# ---- upload and aggregation -----------------------------------------------------------------
def test_masked_upload_sends_only_kept_values_and_a_packed_mask():
    value = np.arange(10, dtype=np.float32)
    mask = np.array([1, 0, 1, 0, 0, 1, 1, 0, 0, 1], dtype=bool)
    records = encode(Upload(arrays={"w": value, "full": np.ones((2, 2), np.float32)},
                            masks={"w": mask}))
    np.testing.assert_array_equal(records["arrays"]["w"].numpy(), value[mask])
    assert records["masks"]["w"].numpy().dtype == np.uint8
    assert records["masks"]["w"].numpy().nbytes == 2  # 10 bits -> 2 bytes
    assert "full" not in records["masks"]


def test_a_real_zero_weight_is_not_treated_as_withheld():
    from flayer.protocol.upload import TensorSpec

    value = np.array([0.0, 0.0, 3.0, 4.0], dtype=np.float32)  # real zeros, all kept
    mask = np.array([True, True, True, False])
    content = RecordDict(encode(Upload(arrays={"w": value}, masks={"w": mask})))
    c = decode(content, {"w": TensorSpec((4,), kept=3)}, weight=1.0)
    prev = {"w": np.full(4, 7.0, dtype=np.float32)}
    out = aggregate([c], prev)["w"]
    np.testing.assert_array_equal(out, [0.0, 0.0, 3.0, 7.0])


def test_per_element_aggregation_with_fallback():
    prev = {"w": np.array([10.0, 20.0, 30.0], dtype=np.float32)}
    a = Contribution(weight=1.0, arrays={"w": np.array([1.0, 2.0])},
                     masks={"w": np.array([True, True, False])})
    b = Contribution(weight=3.0, arrays={"w": np.array([5.0])},
                     masks={"w": np.array([True, False, False])})
    out = aggregate([a, b], prev)["w"]
    # element 0: (1*1 + 3*5) / 4 = 4; element 1: only a -> 2; element 2: nobody -> 30
    np.testing.assert_allclose(out, [4.0, 2.0, 30.0])
    assert out.dtype == np.float32


def test_full_uploads_reduce_to_sample_weighted_fedavg():
    prev = {"w": np.zeros(2, dtype=np.float32)}
    a = Contribution(weight=1.0, arrays={"w": np.array([1.0, 1.0], dtype=np.float32)})
    b = Contribution(weight=3.0, arrays={"w": np.array([5.0, 9.0], dtype=np.float32)})
    np.testing.assert_allclose(aggregate([a, b], prev)["w"], [4.0, 7.0])


# What strategy=flayer refuses, each by its setting's name (tests/unit/test_settings.py)
BAD_SETTINGS = {"flayer": ["strategy.accuracy_source=train", "strategy.val_fraction=0",
                           "strategy.P=0", "strategy.P=9", "strategy.s=0", "strategy.c=-1",
                           "strategy.head_rate=0"]}
