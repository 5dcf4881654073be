"""ResNet-18, fastText and the character LSTM: their layers and tensors, forward shapes, input
checks, FLAYER's masked upload on ResNet's 1x1 downsample convs and the LSTM's tensors,
BatchNorm statistics kept local, and every method through one evaluate / train / evaluate cycle
on each model, through the apps, on small generated CIFAR-10, AG News and Shakespeare data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import MessageType
from torch import nn

from flayer.algorithm import masking
from flayer.algorithm.client import FlayerClient
from flayer.algorithm.settings import Reference, reference
from flayer.apps.inprocess import FIRST_NODE
from flayer.config.schema import Config
from flayer.data.federated import ClientData, load_client
from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap, features
from flayer.nn.models import MODELS, build_model
from flayer.nn.params import shared_params
from flayer.protocol import keys
from flayer.protocol.catalog import METHODS
from flayer.protocol.client import ClientEnv, ClientMethod
from flayer.protocol.upload import decode
from flayer.util.errors import ConfigError
from tests import hubdata
from tests.helpers import CONF, TEST_MODELS, make_config
from tests.localgrid import RecordingGrid, run_local
from tests.playdata import small_plays

IMAGE_SPEC = DataSpec((3, 32, 32), 10)
TOKEN_SPEC = DataSpec((12,), 4, vocab_size=50)  # AG News-like: 4 classes, T = 12
CHAR_SPEC = DataSpec((12,), 80, vocab_size=80)  # Shakespeare-like: next of 80 characters
LSTM_BIASES = ("lstm1.bias_ih_l0", "lstm1.bias_hh_l0", "lstm2.bias_ih_l0", "lstm2.bias_hh_l0")
DOWNSAMPLE = "layer2.0.downsample.0.weight"  # ResNet-18's first 1x1 conv (128 x 64 x 1 x 1)


# generated in the hub's schema, or as the `shakespeare` package's plays (8-character windows)
DATASET = {"resnet18": "cifar10", "fasttext": "agnews", "char_lstm": "shakespeare"}
DATASET_SETTINGS = {"char_lstm": ["dataset.max_len=8"]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Small CIFAR-10 and AG News copies in the hub's schema and a small play, read by the
    real sources."""
    root = tmp_path_factory.mktemp("model-data")
    hubdata.write_cifar10(root / "cifar10", n_per_split=8)
    hubdata.write_agnews(root / "agnews", n_per_split=12)
    small_plays(root / "shakespeare", roles=1, lines=3, width=24)  # 1 role: 66 train, 9 test
    return root


def method_config(root: Path, method: str, model: str, *overrides: str) -> Config:
    """One client on the model's generated dataset, one round."""
    fast = ["strategy.num_pre_loss=2", "strategy.max_start_passes=2"] if method == "fedala" else []
    name = DATASET[model]
    return make_config(f"strategy={method}", f"model={model}", f"dataset={name}",
                       f"dataset.path={root / name}", f"cache_dir={root / 'cache'}",
                       "num_clients=1", "num_rounds=1", "partition=iid", "batch_size=3",
                       "lr=0.01", "progress=false", *fast, *DATASET_SETTINGS.get(model, []),
                       *overrides)


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


def test_char_lstm_layers_are_embedding_two_lstms_and_fc():
    model = MODELS.get("char_lstm")(CHAR_SPEC)
    layers = LayerMap(model)
    assert [layer.name for layer in layers.layers] == ["embedding", "lstm1", "lstm2", "fc"]
    lstm = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    assert layers.param_names == ("embedding.weight", *(f"lstm1.{n}" for n in lstm),
                                  *(f"lstm2.{n}" for n in lstm), "fc.weight", "fc.bias")
    assert layers.num_layers == 4 and layers.num_tensors == 11
    assert layers.shapes["embedding.weight"] == (80, 8)
    assert layers.shapes["lstm1.weight_ih_l0"] == (1024, 8)
    assert layers.shapes["lstm2.weight_hh_l0"] == (1024, 256)
    assert layers.top_p(2) == ("fc.weight", "fc.bias")
    assert layers.feature_width(model) == 256 and layers.linear_head_problem() is None
    assert sum(p.numel() for p in model.parameters()) == 819_920 and layers.buffer_names == ()


def test_char_lstm_predicts_from_the_last_position():
    model = MODELS.get("char_lstm")(CHAR_SPEC)
    x = torch.randint(0, 80, (3, 12))
    out = model(x)
    assert out.shape == (3, 80)
    h = features(model, LayerMap(model), x)
    assert h.shape == (3, 256)
    torch.testing.assert_close(model.fc(h), out)
    steps, _ = model.lstm2(model.lstm1(model.embedding(x))[0])
    torch.testing.assert_close(h, steps[:, -1])
    # the same last characters after other earlier ones: another prediction (it reads the
    # window, not only its end)
    other = x.clone()
    other[:, :6] = (x[:, :6] + 1) % 80
    assert not torch.allclose(model(other), out)


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


@pytest.mark.parametrize("name", ["fasttext", "char_lstm"])
@pytest.mark.parametrize("spec", [IMAGE_SPEC, DataSpec((12,), 4)])
def test_text_models_refuse_data_without_a_vocabulary(name, spec):
    with pytest.raises(ConfigError, match=f"{name} takes token ids .*vocabulary"):
        MODELS.get(name)(spec)


def test_every_model_has_a_config_file_and_every_file_a_model():
    files = {p.stem for p in (CONF / "model").glob("*.yaml")}
    assert files == set(MODELS.names()) - set(TEST_MODELS)
    for name in files:
        assert make_config(f"model={name}").model.name == name


def test_model_configs_carry_the_reference_learning_rates():
    models = ("cnn", "resnet18", "fasttext", "char_lstm")
    assert [make_config(f"model={m}").model.lr for m in models] == [0.005, 0.1, 0.1, 0.8]


def test_flayer_reference_values_per_model():
    res, ft, cnn = reference("resnet18"), reference("fasttext"), reference("cnn")
    assert (res.P, res.s, res.c, res.head_rate) == (4, None, 1.0, 0.2)
    assert res.quirk_rates == (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 0.1)
    assert (ft.P, ft.s, ft.c, ft.head_rate) == (2, None, 1.0, 0.2)
    assert ft.quirk_rates == (1.0, 2.0, 0.1)
    assert (cnn.P, cnn.s, cnn.c, cnn.head_rate) == (2, None, 20.0, 0.2)
    lstm = reference("char_lstm")  # ours: the paper has no recurrent model
    assert (lstm.P, lstm.s, lstm.c, lstm.head_rate, lstm.quirk_rates) == (2, None, 1.0, 0.2, None)
    assert reference("a-model-flayer-has-no-values-for") == Reference()


@pytest.mark.parametrize("name, spec, s", [("resnet18", IMAGE_SPEC, 6.0),
                                           ("fasttext", TOKEN_SPEC, 2.0)])
def test_flayer_constants_and_quirk_rates_fit_the_model(name, spec, s, data_root):
    cfg = method_config(data_root, "flayer", name, "strategy.reference_quirks=true")
    layers = LayerMap(MODELS.get(name)(spec))
    cfg.strategy.check(cfg, layers)  # quirk_rates has one entry per layer, P fits
    client = FlayerClient(ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=0,
                                    data=load_client(cfg, 0), layers=layers,
                                    device=torch.device("cpu")), MODELS.get(name)(spec))
    k = client.constants
    ref = reference(name)
    assert (k.P, k.s, k.c, k.head_rate) == (ref.P, s, 1.0, 0.2)
    assert client.rates() == pytest.approx([cfg.learning_rate * q for q in ref.quirk_rates])


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


def test_char_lstm_masks_only_the_lstm_biases():
    layers = LayerMap(MODELS.get("char_lstm")(CHAR_SPEC))
    J = layers.num_tensors
    kept = {n: masking.kept_count(layers.tensor_index[n], layers.shapes[n], J)
            for n in layers.param_names}
    # 2-D weights go in full; each 1024-element bias (j = 3, 4, 7, 8) withholds
    # round(1024 * (1 - j / 11)) of its elements
    assert {n: k for n, k in kept.items() if k is not None} == {
        "lstm1.bias_ih_l0": 1024 - 745, "lstm1.bias_hh_l0": 1024 - 652,
        "lstm2.bias_ih_l0": 1024 - 372, "lstm2.bias_hh_l0": 1024 - 279}


# ---- every method, one round through the apps on each model ------------------------------------
def new_client(cfg: Config, data: ClientData) -> ClientMethod:
    """A fresh client with no personal state, as the ClientApp builds it."""
    model = build_model(cfg, data.source.spec)
    env = ClientEnv(cfg=cfg, settings=cfg.strategy, partition_id=0, data=data,
                    layers=LayerMap(model), device=torch.device("cpu"))
    return METHODS.get(cfg.strategy.name).client(env, model)


_CYCLES: dict[tuple[str, ...], dict] = {}


def cycle_of(root: Path, method: str, model: str, *overrides: str) -> dict:
    """`cycle` for these settings, run once per test session (the tests only read it)."""
    key = (method, model, *overrides)
    if key not in _CYCLES:
        _CYCLES[key] = cycle(method_config(root, method, model, *overrides))
    return _CYCLES[key]


def arrays_of(msg) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in msg.content[keys.ARRAYS].items()}


def cycle(cfg: Config) -> dict:
    """Round 0's evaluation, one training round, aggregation and the next evaluation of one
    client, through the real ServerApp logic and ClientApp handlers; what went over the wire
    and what the client stored after each message."""
    grid = RecordingGrid(cfg)
    strategy, records, _ = run_local(cfg, grid=grid)
    train = [(m, r, s) for m, r, s in grid.log if m.metadata.message_type == MessageType.TRAIN
             and m.content[keys.CONFIG][keys.SERVER_ROUND] == 1]
    evals = [(m, r, s) for m, r, s in grid.log
             if m.metadata.message_type == MessageType.EVALUATE]
    (msg, reply, after_fit), = train
    glob, new = arrays_of(msg), arrays_of(evals[-1][0])
    spec = strategy.server.upload_spec(glob)
    metrics = reply.content[keys.client_record(0)]
    sent = decode(reply.content, spec, float(metrics[keys.NUM_EXAMPLES]))
    return {"cfg": cfg, "layers": strategy.server.layers, "glob": glob, "new": new, "sent": sent,
            "metrics": metrics, "spec": spec, "records": records,
            "evals": [r.content[keys.client_record(0)] for _, r, _ in evals],
            "after_fit": after_fit, "final": evals[-1][2],
            "meta": grid.contexts[FIRST_NODE].state[keys.STATE_META]}


CASES = [(method, model) for model in ("resnet18", "fasttext", "char_lstm")
         for method in METHODS.names()]


@pytest.mark.parametrize("method, model", CASES)
def test_every_method_runs_on_the_model(method, model, data_root):
    out = cycle_of(data_root, method, model)
    layers, sent, metrics = out["layers"], out["sent"], out["metrics"]
    data = load_client(out["cfg"], 0)
    assert metrics[keys.NUM_EXAMPLES] == data.num_train
    assert np.isfinite(metrics[keys.TRAIN_LOSS])
    assert [r.failures for r in out["records"]] == [0, 0]
    buffers = set(layers.buffer_names)
    assert not buffers & set(sent.arrays)  # BatchNorm statistics never leave
    assert not buffers & set(out["glob"])
    if method in ("fedper", "fedrep"):  # what each method uploads is its own test's business
        assert set(sent.arrays) == set(layers.body_params)
    assert len(out["evals"]) == 2
    for ev in out["evals"]:
        assert ev[keys.NUM_TEST] == len(data.y_test) and 0 <= ev[keys.CORRECT] <= ev[keys.NUM_TEST]
    for name, value in out["new"].items():
        assert value.shape == out["glob"][name].shape and np.isfinite(value).all(), name
    if model == "resnet18":
        # the client's stored running statistics are its own trained ones: restored from its
        # state, never reset by the new global model (FLAYER's head pass moves them on)
        own, fresh = out["final"], new_client(out["cfg"], data).state()[0]
        stats = [n for n in own if n.startswith("model/")
                 and n.endswith(("running_mean", "running_var"))]
        assert stats
        for name in stats:
            assert not np.array_equal(own[name], fresh[name]), name
            if method != "flayer":
                np.testing.assert_array_equal(own[name], out["after_fit"][name])


def test_flayer_head_pass_on_resnet18_moves_only_the_top_4_tensors(data_root):
    cfg = method_config(data_root, "flayer", "resnet18")
    client = new_client(cfg, load_client(cfg, 0))
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
def test_flayer_upload_of_the_downsample_conv_on_resnet18(quirks, data_root):
    out = cycle_of(data_root, "flayer", "resnet18",
                   *(["strategy.reference_quirks=true"] if quirks else []))
    sent = out["sent"]
    mask = sent.masks[DOWNSAMPLE]
    assert out["spec"][DOWNSAMPLE].kept == int(mask.sum())
    if quirks:
        assert not mask.any()
        # nobody uploaded it: the global tensor stays as it was
        np.testing.assert_array_equal(out["new"][DOWNSAMPLE], out["glob"][DOWNSAMPLE])
    else:
        assert (mask.reshape(128, 64).sum(axis=1) == 22).all()
        kept = out["new"][DOWNSAMPLE][mask]  # the one client's kept values, as it sent them
        np.testing.assert_array_equal(kept, sent.arrays[DOWNSAMPLE])
        np.testing.assert_array_equal(out["new"][DOWNSAMPLE][~mask],
                                      out["glob"][DOWNSAMPLE][~mask])
    assert "fc.weight" not in sent.masks and "fc.bias" not in sent.masks


def test_flayer_on_fasttext_sends_the_embedding_in_full(data_root):
    out = cycle_of(data_root, "flayer", "fasttext")
    sent = out["sent"]
    assert set(sent.masks) == {"fc1.bias"} and int(sent.masks["fc1.bias"].sum()) == 13
    np.testing.assert_array_equal(out["new"]["embedding.weight"],
                                  sent.arrays["embedding.weight"])
    assert len(out["meta"]["rates"]) == 3


def test_flayer_on_char_lstm_masks_the_biases_and_adapts_four_rates(data_root):
    out = cycle_of(data_root, "flayer", "char_lstm")
    sent = out["sent"]
    assert set(sent.masks) == set(LSTM_BIASES)
    assert int(sent.masks["lstm2.bias_hh_l0"].sum()) == 1024 - 279
    np.testing.assert_array_equal(out["new"]["lstm2.weight_hh_l0"],
                                  sent.arrays["lstm2.weight_hh_l0"])  # 2-D: sent in full
    assert len(out["meta"]["rates"]) == 4
