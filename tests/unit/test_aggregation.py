"""Weighted sums made where the contributions are and combined later give the mean of all."""

import numpy as np
import pytest

from flayer.protocol.aggregation import Contribution, WeightedSum, aggregate


def contributions(rng: np.random.Generator, n: int, masked: bool) -> list[Contribution]:
    out = []
    for _ in range(n):
        w = rng.normal(size=(3, 4)).astype(np.float32)
        weight = float(rng.integers(1, 50))
        if masked and rng.random() < 0.7:
            mask = rng.random((3, 4)) < 0.5
            out.append(Contribution(weight, {"w": w[mask], "b": w[0]}, {"w": mask}))
        else:
            out.append(Contribution(weight, {"w": w, "b": w[0]}))
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_partial_sums_merged_equal_one_sum_of_all(masked):
    rng = np.random.default_rng(0)
    cs = contributions(rng, 9, masked)
    previous = {"w": np.full((3, 4), 7.0, np.float32), "b": np.zeros(4, np.float32),
                "kept": np.ones(2, np.float32)}
    whole = aggregate(cs, previous)
    total = WeightedSum()
    for part in (cs[:4], cs[4:5], cs[5:]):  # three executors' cohorts
        total.merge(WeightedSum.of(part))
    merged = total.mean(previous)
    for key in previous:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-6)
        assert merged[key].dtype == previous[key].dtype
    np.testing.assert_array_equal(merged["kept"], previous["kept"])  # nobody sent it


def test_the_mean_is_sample_weighted_per_element():
    a = Contribution(1.0, {"w": np.array([1.0, 2.0])}, {"w": np.array([True, False, True])})
    b = Contribution(3.0, {"w": np.array([5.0, 9.0, 0.0])})
    out = WeightedSum.of([a, b]).mean({"w": np.array([-1.0, -1.0, -1.0])})["w"]
    np.testing.assert_allclose(out, [(1 + 15) / 4, 9.0, (2 + 0) / 4])


def test_an_element_nobody_sent_keeps_its_previous_value():
    a = Contribution(2.0, {"w": np.array([4.0])}, {"w": np.array([False, True])})
    out = WeightedSum.of([a]).mean({"w": np.array([8.0, 0.0], np.float32)})["w"]
    np.testing.assert_array_equal(out, [8.0, 4.0])


def test_a_sum_travels_as_items_and_back():
    rng = np.random.default_rng(1)
    total = WeightedSum.of(contributions(rng, 5, masked=True))
    # a whole-tensor weight may arrive as a one-element array (Flower's arrays are at least 1-D)
    items = [(k, n, d.reshape(1) if d.ndim == 0 else d) for k, n, d in total.items()]
    back = WeightedSum.from_items(items)
    previous = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    for key, value in total.mean(previous).items():
        np.testing.assert_array_equal(back.mean(previous)[key], value)


def test_weights_that_do_not_fit_the_values_are_refused():
    with pytest.raises(ValueError, match="weights of shape"):
        WeightedSum.from_items([("w", np.zeros((2, 3)), np.ones((3, 2)))])
    total = WeightedSum.of([Contribution(1.0, {"w": np.zeros(3)})])
    with pytest.raises(ValueError, match="shape"):
        total.merge(WeightedSum.of([Contribution(1.0, {"w": np.zeros(4)})]))
