"""FLAYER's client side on a tiny client: head pass, rates kept between rounds, masks."""

import sys

import numpy as np
import pytest

from flayer.algorithm import masking
from flayer.algorithm.client import FlayerClient
from flayer.nn.params import shared_params
from tests.helpers import make_client as build_client
from tests.helpers import make_config


def make_client(*overrides: str) -> FlayerClient:
    return build_client(FlayerClient, make_config("batch_size=8", *overrides))


def perturbed_global(client: FlayerClient) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {k: v + rng.normal(0, 0.01, v.shape).astype(v.dtype)
            for k, v in shared_params(client.model).items()}


def test_head_pass_changes_only_the_top_p_tensors():
    client = make_client()
    glob = perturbed_global(client)
    client.meta["a_k"] = 0.5
    client.receive(glob, version=1)
    after = shared_params(client.model)
    top = set(client.env.layers.top_p(2))
    for name, value in after.items():
        if name in top:
            assert not np.allclose(value, glob[name]), name
        else:
            np.testing.assert_array_equal(value, glob[name])
    assert client.meta["mixed_a"] == 0.5
    assert all(p.requires_grad for p in client.model.parameters())


def test_local_init_off_is_a_plain_copy():
    client = make_client("strategy.local_init=false")
    glob = perturbed_global(client)
    client.receive(glob, version=1)
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(value, glob[name])


def test_fit_recomputes_middle_rates_from_the_gradients_and_keeps_the_ends(monkeypatch):
    client = make_client("local_epochs=2")
    adapt = sys.modules[type(client).__module__].adapt_rates
    seen = []  # per recomputation: each tensor's gradient norm, measured here

    def spy(model, *args, **kwargs):
        seen.append({n: float(p.grad.norm()) for n, p in model.named_parameters()
                     if p.grad is not None})
        return adapt(model, *args, **kwargs)

    monkeypatch.setattr(sys.modules[type(client).__module__], "adapt_rates", spy)
    result = client.fit(shared_params(client.model), version=0)
    assert len(seen) == 2  # at the first mini-batch of each epoch, and only then
    # the rates kept are the last epoch's, from the CNN's constants: c = 20, s = L - 1 = 3
    eta, c, s, layers = client.lr, 20.0, 3.0, client.env.layers
    rates = client.meta["rates"]
    assert rates[0] == eta and rates[-1] == pytest.approx(eta * 0.2)
    for layer in (1, 2):
        norms = [seen[-1][n] for n in layers.layers[layer].params]
        expected = np.mean([c * eta * (1 + (layer / s) * np.log(1 + 1 / g)) for g in norms])
        assert rates[layer] == pytest.approx(expected, rel=1e-6)
        assert rates[layer] > c * eta  # ln(1 + 1/g) > 0: never below c * eta
    assert result.num_examples == 40 and np.isfinite(result.train_loss)


def test_fit_without_adaptive_rates_uses_eta_everywhere():
    client = make_client("strategy.adaptive_lr=false")
    client.fit(shared_params(client.model), version=0)
    assert client.meta["rates"] == [client.lr] * 4


def test_fit_masks_match_the_declared_counts():
    client = make_client()
    result = client.fit(shared_params(client.model), version=0)
    layers = client.env.layers
    J = layers.num_tensors
    assert set(result.upload.arrays) == set(layers.param_names)
    for name, mask in result.upload.masks.items():
        j = layers.tensor_index[name]
        assert int(mask.sum()) == masking.kept_count(j, mask.shape, J)
    # conv weights and their biases (j < J - 2, not 2-D) are masked; fc1's weight is not
    assert set(result.upload.masks) == {"conv1.0.weight", "conv1.0.bias", "conv2.0.weight",
                                        "conv2.0.bias", "fc1.0.bias"}


def test_masked_upload_off_sends_no_mask():
    client = make_client("strategy.masked_upload=false")
    assert client.fit(shared_params(client.model), version=0).upload.masks == {}


def test_the_kept_state_is_the_top_p_tensors_and_rates_and_it_suffices():
    """Lower layers are overwritten from every global model, so the client keeps only its
    top-P tensors (and rates, a_k): restored from them, it takes in the next global model
    exactly as a client that never stopped."""
    client = make_client()
    glob = shared_params(client.model)
    client.fit(glob, version=0)
    arrays, meta = client.state()
    top = set(client.layers.top_p(client.constants.P))
    assert {k[len("model/"):] for k in arrays} == top
    fresh = make_client()
    fresh.load_state(arrays, meta)
    new = {k: v + 0.01 for k, v in glob.items()}
    client.receive(new, 1)
    fresh.receive(new, 1)
    for name, value in shared_params(client.model).items():
        np.testing.assert_array_equal(value, shared_params(fresh.model)[name])
    assert fresh.rates() == client.meta["rates"]
