"""ResNet-18 and fastText: their layers and tensors, forward shapes, input checks, FLAYER's
masked upload on ResNet's 1x1 downsample convs, BatchNorm statistics kept local, and every
method through one evaluate / train / evaluate cycle on each model with tiny in-memory data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from torch import nn

from baselines.feddbe import FEATURE_MEAN, GLOBAL_MEAN, PHASE, PHASE_MEAN
from flayer.catalog import METHODS
from flayer.config import Config, DatasetConfig
from flayer.data.federated import ClientData
from flayer.data.source import DataSource, DataSpec, scale_images
from flayer.errors import ConfigError
from flayer.flayer import masking
from flayer.flayer.method import FlayerClient, constants
from flayer.layers import LayerMap, features
from flayer.method import ClientEnv, ClientMethod, build_model, shared_params
from flayer.models import MODELS
from flayer.upload import decode, encode
from tests.helpers import CONF, make_config

IMAGE_SPEC = DataSpec((3, 32, 32), 10)
TOKEN_SPEC = DataSpec((12,), 4, vocab_size=50)  # AG News-like: 4 classes, T = 12
DOWNSAMPLE = "layer2.0.downsample.0.weight"  # ResNet-18's first 1x1 conv (128 x 64 x 1 x 1)


class TinyImages(DataSource):
    """3 x 32 x 32 uint8 images held in memory (CIFAR-like)."""

    name = "tiny-images"
    spec = IMAGE_SPEC

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return scale_images(x)


class TinyTokens(DataSource):
    """Token-id rows held in memory; the model input is the ids themselves."""

    name = "tiny-tokens"
    spec = TOKEN_SPEC

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


def image_data(n_train: int = 6, n_test: int = 4, seed: int = 0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    shape = IMAGE_SPEC.input_shape

    def x(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)

    def y(n: int) -> torch.Tensor:
        return torch.randint(0, IMAGE_SPEC.num_classes, (n,), generator=g)

    return ClientData(x_train=x(n_train), y_train=y(n_train), x_test=x(n_test), y_test=y(n_test),
                      x_val=x(0), y_val=y(0), source=TinyImages(DatasetConfig(name="tiny")))


def token_data(n_train: int = 12, n_test: int = 6, seed: int = 0) -> ClientData:
    """Rows of ids in [1, V), each padded with 0 after a random length (at least 1 token)."""
    g = torch.Generator().manual_seed(seed)
    (T,), V = TOKEN_SPEC.input_shape, TOKEN_SPEC.vocab_size

    def x(n: int) -> torch.Tensor:
        ids = torch.randint(1, V, (n, T), generator=g, dtype=torch.int64)
        lengths = torch.randint(1, T + 1, (n, 1), generator=g)
        return torch.where(torch.arange(T) < lengths, ids, torch.zeros_like(ids))

    def y(n: int) -> torch.Tensor:
        return torch.randint(0, TOKEN_SPEC.num_classes, (n,), generator=g)

    return ClientData(x_train=x(n_train), y_train=y(n_train), x_test=x(n_test), y_test=y(n_test),
                      x_val=x(0), y_val=y(0), source=TinyTokens(DatasetConfig(name="tiny")))


DATA = {"resnet18": image_data, "fasttext": token_data}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: ResNet's small convolutions run several times slower when torch's
    threads compete for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- layers and tensors ---------------------------------------------------------------------
def test_resnet18_layers_are_its_top_level_children():
    model = MODELS.get("resnet18")(IMAGE_SPEC)
    layers = LayerMap(model)
    assert [layer.name for layer in layers.layers] == [
        "conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert layers.num_layers == 7 and layers.num_tensors == 62
    assert layers.layers[0].params == ("conv1.weight",)
    assert layers.layers[1].params == ("bn1.weight", "bn1.bias")
    assert layers.head.params == ("fc.weight", "fc.bias")
    assert [len(layer.params) for layer in layers.layers] == [1, 2, 12, 15, 15, 15, 2]
    # FLAYER's top-P = 4 spans two layers: layer4's last BatchNorm and the classifier
    assert layers.top_p(4) == ("layer4.1.bn2.weight", "layer4.1.bn2.bias", "fc.weight",
                               "fc.bias")
    assert layers.layer_of["layer4.1.bn2.bias"] == 5 and layers.layer_of["fc.bias"] == 6
    assert layers.tensor_index[DOWNSAMPLE] == 21
    assert layers.shapes[DOWNSAMPLE] == (128, 64, 1, 1)
    assert layers.feature_width(model) == 512 and layers.linear_head_problem() is None
    assert model.fc.out_features == 10


def test_fasttext_layers_are_embedding_fc1_fc():
    model = MODELS.get("fasttext")(TOKEN_SPEC)
    layers = LayerMap(model)
    assert [layer.name for layer in layers.layers] == ["embedding", "fc1", "fc"]
    assert layers.param_names == ("embedding.weight", "fc1.weight", "fc1.bias", "fc.weight",
                                  "fc.bias")
    assert layers.num_layers == 3 and layers.num_tensors == 5
    assert layers.shapes["embedding.weight"] == (50, 32)
    assert layers.top_p(2) == ("fc.weight", "fc.bias")
    assert layers.feature_width(model) == 32 and layers.buffer_names == ()
    assert model.embedding.padding_idx == 0
    assert torch.count_nonzero(model.embedding.weight[0]) == 0


def test_resnet18_keeps_the_imagenet_stem_and_adapts_its_input_channels():
    rgb = MODELS.get("resnet18")(IMAGE_SPEC)
    assert rgb.conv1.weight.shape == (64, 3, 7, 7) and rgb.conv1.stride == (2, 2)
    assert isinstance(rgb.maxpool, nn.MaxPool2d)
    gray = MODELS.get("resnet18")(DataSpec((1, 28, 28), 10))
    assert gray.conv1.weight.shape == (64, 1, 7, 7) and gray.conv1.bias is None
    assert LayerMap(gray).num_tensors == 62
    gray.eval()
    assert gray(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_models_are_identical_for_the_same_seed():
    cfg = make_config("model=resnet18")
    a, b = build_model(cfg, IMAGE_SPEC), build_model(cfg, IMAGE_SPEC)
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n


# ---- forward --------------------------------------------------------------------------------
@pytest.mark.parametrize("size, classes", [(32, 10), (64, 200)])
def test_resnet18_forward_shapes(size, classes):
    model = MODELS.get("resnet18")(DataSpec((3, size, size), classes))
    layers = LayerMap(model)
    x = torch.randn(2, 3, size, size)
    model.train()
    assert model(x).shape == (2, classes)
    model.eval()
    h = features(model, layers, x)
    assert h.shape == (2, 512)
    torch.testing.assert_close(model.fc(h), model(x))


def test_fasttext_forward_is_the_mean_over_all_positions():
    model = MODELS.get("fasttext")(TOKEN_SPEC)
    x = torch.tensor([[5, 7, 0, 0], [1, 2, 3, 4], [9, 0, 0, 0]])
    out = model(x)
    assert out.shape == (3, 4)
    # padding (id 0) embeds to zero and still counts in the mean, as in the reference
    mean = model.embedding.weight[[5, 7]].sum(0) / 4
    torch.testing.assert_close(out[0], model.fc(model.fc1(mean)))
    h = features(model, LayerMap(model), x)
    assert h.shape == (3, 32)
    torch.testing.assert_close(model.fc(h), out)


def test_fasttext_padding_row_gets_no_gradient():
    model = MODELS.get("fasttext")(TOKEN_SPEC)
    model(torch.tensor([[3, 0, 0], [4, 5, 0]])).sum().backward()
    grad = model.embedding.weight.grad
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[3]) > 0


# ---- input checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_image_models_refuse_token_data(name):
    with pytest.raises(ConfigError, match="takes images .*token ids"):
        MODELS.get(name)(TOKEN_SPEC)


@pytest.mark.parametrize("spec", [IMAGE_SPEC, DataSpec((12,), 4)])
def test_fasttext_refuses_data_without_a_vocabulary(spec):
    with pytest.raises(ValueError, match="vocabulary"):
        MODELS.get("fasttext")(spec)


def test_every_model_has_a_config_file_and_every_file_a_model():
    files = {p.stem for p in (CONF / "model").glob("*.yaml")}
    assert files == set(MODELS.names())
    for name in files:
        assert make_config(f"model={name}").model.name == name


def test_model_configs_carry_the_reference_values():
    res = make_config("model=resnet18").model
    assert (res.lr, res.P, res.s, res.c, res.head_rate) == (0.1, 4, None, 1.0, 0.2)
    assert res.quirk_rates == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 0.1]
    ft = make_config("model=fasttext").model
    assert (ft.lr, ft.P, ft.s, ft.c, ft.head_rate) == (0.1, 2, None, 1.0, 0.2)
    assert ft.quirk_rates == [1.0, 2.0, 0.1]


@pytest.mark.parametrize("name, spec, s", [("resnet18", IMAGE_SPEC, 6.0),
                                           ("fasttext", TOKEN_SPEC, 2.0)])
def test_flayer_constants_and_quirk_rates_fit_the_model(name, spec, s):
    cfg = make_config(f"model={name}", "strategy=flayer", "strategy.reference_quirks=true")
    layers = LayerMap(MODELS.get(name)(spec))
    cfg.strategy.check(cfg, layers)  # quirk_rates has one entry per layer, P fits
    client = FlayerClient(ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=0,
                                    data=DATA[name](), layers=layers,
                                    device=torch.device("cpu")), MODELS.get(name)(spec))
    k = constants(client)
    assert (k.P, k.s, k.c, k.head_rate) == (cfg.model.P, s, 1.0, 0.2)
    assert client.rates() == pytest.approx([0.1 * q for q in cfg.model.quirk_rates])


# ---- FLAYER's masked upload -----------------------------------------------------------------
def test_first_downsample_conv_withholds_42_of_64_per_output_channel():
    J, j = 62, 21
    m = masking.withheld_fraction(j, J)
    assert m == pytest.approx(1 - 21 / 62) and round(64 * m) == 42
    change = np.random.default_rng(0).random((128, 64, 1, 1))
    mask = masking.keep_mask(change, j, J)
    assert mask.shape == (128, 64, 1, 1)
    assert (mask.reshape(128, 64).sum(axis=1) == 64 - 42).all()
    assert masking.kept_count(j, (128, 64, 1, 1), J) == 128 * 22
    # per output channel the 42 least-changed weights are the withheld ones
    flat, kept = change.reshape(128, 64), mask.reshape(128, 64)
    assert (flat[~kept].reshape(128, 42).max(1) <= flat[kept].reshape(128, 22).min(1)).all()


def test_reference_quirks_withhold_the_whole_downsample_conv():
    change = np.random.default_rng(0).random((128, 64, 1, 1))
    mask = masking.keep_mask(change, 21, 62, reference_quirks=True)
    assert not mask.any()
    assert masking.kept_count(21, (128, 64, 1, 1), 62, reference_quirks=True) == 0


def test_resnet18_masks_by_tensor_kind():
    layers = LayerMap(MODELS.get("resnet18")(IMAGE_SPEC))
    J = layers.num_tensors
    masked = {n for n in layers.param_names
              if masking.is_masked(layers.tensor_index[n], layers.shapes[n], J, False)}
    # every conv and BatchNorm tensor, the 1x1 downsample convs included; never the head
    assert masked == set(layers.param_names) - {"fc.weight", "fc.bias"}
    quirky = {n for n in layers.param_names
              if masking.kept_count(layers.tensor_index[n], layers.shapes[n], J, True) == 0}
    assert quirky == {"layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight",
                      "layer4.0.downsample.0.weight"}


def test_fasttext_masks_only_fc1_bias():
    layers = LayerMap(MODELS.get("fasttext")(TOKEN_SPEC))
    J = layers.num_tensors
    masked = {n: masking.kept_count(layers.tensor_index[n], layers.shapes[n], J)
              for n in layers.param_names}
    # the 2-D embedding and fc1 weight go in full; fc1.bias (j = 2) withholds round(32 * 0.6)
    assert masked == {"embedding.weight": None, "fc1.weight": None, "fc1.bias": 32 - 19,
                      "fc.weight": None, "fc.bias": None}


# ---- every method, one cycle on each model ---------------------------------------------------
def new_client(cfg: Config, data: ClientData, state=None, **instructions) -> ClientMethod:
    """A fresh client for one message, as the ClientApp builds it (state restored)."""
    model = build_model(cfg, data.source.spec)
    env = ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=0, data=data,
                    layers=LayerMap(model), device=torch.device("cpu"),
                    instructions=instructions)
    client = METHODS.get(cfg.strategy.name).client(env, model)
    if state is not None:
        client.load_state(*state)
    return client


def method_config(method: str, model: str, *overrides: str) -> Config:
    fast = ["strategy.num_pre_loss=2", "strategy.max_start_passes=2"] if method == "fedala" else []
    return make_config(f"strategy={method}", f"model={model}", "batch_size=3", "lr=0.01",
                       "progress=false", *fast, *overrides)


_CYCLES: dict[tuple[str, ...], dict] = {}


def cycle_of(method: str, model: str, *overrides: str) -> dict:
    """`cycle` for these settings, run once per test session (the tests only read it)."""
    key = (method, model, *overrides)
    if key not in _CYCLES:
        _CYCLES[key] = cycle(method_config(method, model, *overrides))
    return _CYCLES[key]


def cycle(cfg: Config) -> dict:
    """Round 0 evaluation, one training round, aggregation, then the next evaluation: the
    ClientApp's order, with the personal state carried between messages."""
    data = DATA[cfg.model.name]()
    model = build_model(cfg, data.source.spec)
    layers = LayerMap(model)
    cfg.strategy.check(cfg, layers)
    strategy = METHODS.get(cfg.strategy.name).strategy(cfg, cfg.strategy, layers)
    glob = strategy.initial_global(model)
    state = None
    if cfg.strategy.name == "feddbe":  # round 0's feature-mean phase
        client = new_client(cfg, data, **{PHASE: PHASE_MEAN})
        client.receive(glob, 0)
        mean = client.fit(glob, 0).upload.arrays[FEATURE_MEAN]
        assert mean.shape == (layers.feature_width(model),)
        glob = {**glob, GLOBAL_MEAN: mean}
    client = new_client(cfg, data, state)
    client.receive(glob, 0)
    first, _ = client.evaluate()
    state = client.state()
    client = new_client(cfg, data, state)
    result = client.fit(glob, 0)
    buffers_after_fit = {n: b.clone() for n, b in client.model.named_buffers()}
    state = client.state()
    spec = strategy.upload_spec(glob)
    reply = decode(RecordDict(encode(result.upload)), spec, float(result.num_examples))
    new = strategy.aggregate_contributions([reply], glob)
    client = new_client(cfg, data, state)
    client.receive(new, 1)
    second, _ = client.evaluate()
    return {"layers": layers, "glob": glob, "new": new, "result": result, "spec": spec,
            "evals": (first, second), "buffers": buffers_after_fit, "client": client,
            "data": data}


CASES = [(method, model) for model in ("resnet18", "fasttext") for method in METHODS.names()]


@pytest.mark.parametrize("method, model", CASES)
def test_every_method_runs_on_the_model(method, model):
    out = cycle_of(method, model)
    layers, result = out["layers"], out["result"]
    assert result.num_examples == out["data"].num_train and np.isfinite(result.train_loss)
    buffers = set(layers.buffer_names)
    assert not buffers & set(result.upload.arrays)  # BatchNorm statistics never leave
    assert not buffers & set(out["glob"])
    head = set(layers.head.params)
    if method in ("fedper", "fedrep"):
        assert set(result.upload.arrays) == set(layers.body_params)
    else:
        assert head <= set(result.upload.arrays)
    for ev in out["evals"]:
        assert ev.num == len(out["data"].y_test) and 0 <= ev.correct <= ev.num
    for name, value in out["new"].items():
        assert value.shape == out["glob"][name].shape and np.isfinite(value).all(), name
    if model == "resnet18":
        # the next message's client holds its own trained running statistics: restored from
        # its state, never reset by the new global model (FLAYER's head pass moves them on)
        own = dict(out["client"].model.named_buffers())
        fresh = dict(new_client(out["client"].cfg, out["data"]).model.named_buffers())
        stats = [n for n in own if n.endswith(("running_mean", "running_var"))]
        assert stats
        for name in stats:
            assert not torch.equal(own[name], fresh[name]), name
            if method != "flayer":
                assert torch.equal(own[name], out["buffers"][name]), name


def test_flayer_head_pass_on_resnet18_moves_only_the_top_4_tensors():
    cfg = method_config("flayer", "resnet18")
    data = image_data()
    client = new_client(cfg, data)
    rng = np.random.default_rng(0)
    glob = {k: v + rng.normal(0, 0.01, v.shape).astype(v.dtype)
            for k, v in shared_params(client.model).items()}
    client.meta["a_k"] = 0.5
    client.receive(glob, 1)
    top = set(client.env.layers.top_p(4))
    for name, value in shared_params(client.model).items():
        if name in top:
            assert not np.array_equal(value, glob[name]), name
        else:
            np.testing.assert_array_equal(value, glob[name])


@pytest.mark.parametrize("quirks", [False, True])
def test_flayer_upload_of_the_downsample_conv_on_resnet18(quirks):
    out = cycle_of("flayer", "resnet18", *(["strategy.reference_quirks=true"] if quirks else []))
    sent = out["result"].upload
    mask = sent.masks[DOWNSAMPLE]
    assert out["spec"][DOWNSAMPLE].kept == int(mask.sum())
    if quirks:
        assert not mask.any()
        # nobody uploaded it: the global tensor stays as it was
        np.testing.assert_array_equal(out["new"][DOWNSAMPLE], out["glob"][DOWNSAMPLE])
    else:
        assert (mask.reshape(128, 64).sum(axis=1) == 22).all()
        kept = out["new"][DOWNSAMPLE][mask]
        np.testing.assert_array_equal(kept, sent.arrays[DOWNSAMPLE][mask])
        np.testing.assert_array_equal(out["new"][DOWNSAMPLE][~mask],
                                      out["glob"][DOWNSAMPLE][~mask])
    assert "fc.weight" not in sent.masks and "fc.bias" not in sent.masks


def test_flayer_on_fasttext_sends_the_embedding_in_full():
    out = cycle_of("flayer", "fasttext")
    sent = out["result"].upload
    assert set(sent.masks) == {"fc1.bias"} and int(sent.masks["fc1.bias"].sum()) == 13
    np.testing.assert_array_equal(out["new"]["embedding.weight"],
                                  sent.arrays["embedding.weight"])
    assert len(out["client"].meta["rates"]) == 3
