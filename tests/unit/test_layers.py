import torch

from flayer.data.source import DataSpec
from flayer.nn.layers import LayerMap, features
from flayer.nn.models import MODELS
from tests.helpers import FMNIST_SPEC


def test_cnn_layers_are_its_top_level_children():
    model = MODELS.get("cnn")(FMNIST_SPEC)
    layers = LayerMap(model)
    assert [layer.name for layer in layers.layers] == ["conv1", "conv2", "fc1", "fc"]
    assert layers.num_layers == 4 and layers.num_tensors == 8
    assert layers.layers[0].params == ("conv1.0.weight", "conv1.0.bias")
    assert layers.head.params == ("fc.weight", "fc.bias")
    assert layers.top_p(2) == ("fc.weight", "fc.bias")
    assert layers.tensor_index["fc1.0.weight"] == 4 and layers.layer_of["fc1.0.bias"] == 2
    assert layers.body_params == layers.param_names[:6]


def test_cnn_flatten_size_follows_input_shape():
    model = MODELS.get("cnn")(DataSpec((3, 32, 32), 100))
    assert model.fc1[0].in_features == 64 * 5 * 5
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_param_groups_one_per_layer_with_its_rate():
    model = MODELS.get("cnn")(FMNIST_SPEC)
    layers = LayerMap(model)
    groups = layers.param_groups(model, [1.0, 2.0, 3.0, 4.0])
    assert [g["lr"] for g in groups] == [1.0, 2.0, 3.0, 4.0]
    assert groups[2]["params"][0] is model.fc1[0].weight


def test_features_are_the_head_input():
    model = MODELS.get("cnn")(FMNIST_SPEC)
    layers = LayerMap(model)
    x = torch.randn(3, 1, 28, 28)
    h = features(model, layers, x)
    assert h.shape == (3, layers.feature_width(model)) == (3, 512)
    torch.testing.assert_close(model.fc(h), model(x))
    assert isinstance(model.fc, torch.nn.Linear)  # head restored
