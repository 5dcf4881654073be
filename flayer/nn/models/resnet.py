"""ResNet-18 as the FLAYER reference builds it: torchvision's `resnet18(num_classes=C)`, not
pretrained, with the ImageNet stem (7x7 stride-2 conv and max-pool) on every input size,
32x32 included.

Its top-level children with parameters are the layers: conv1, bn1, layer1..layer4, fc, so
L = 7 and J = 62 (the ReLU, max-pool and average pool own no parameters). The 1x1 downsample
convolutions inside layer2..layer4 are what FLAYER's masked upload treats specially
(flayer/algorithm/masking.py). BatchNorm running statistics are buffers, so they stay local.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

from flayer.data.source import DataSpec
from flayer.nn.models import MODELS, require_images


def _stem_for(channels: int) -> nn.Conv2d:
    """The first conv for `channels` input channels, shaped and initialized as torchvision's
    (kaiming normal, fan_out), so only the channel count differs."""
    conv = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


@MODELS.register("resnet18")
def build_resnet18(spec: DataSpec) -> nn.Module:
    """torchvision ResNet-18 with C outputs; for inputs that are not RGB (e.g. grayscale) the
    first conv takes the dataset's channel count instead of 3."""
    require_images(spec, "resnet18")
    model = resnet18(weights=None, num_classes=spec.num_classes)
    channels = spec.input_shape[0]
    if channels != 3:
        model.conv1 = _stem_for(channels)
    return model
