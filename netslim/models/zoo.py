"""Reference models for 1×28×28 inputs and 10 classes, the test bed of every pruning method.

They are deliberately plain: only standard layers, no data-dependent control flow and no shared
activation modules, so ``torch.fx`` can trace them and the structural engine sees each coupling
(flatten → linear, residual add) explicitly. Every block is a named submodule, so pruned layers
have stable, readable names (``layer2.0.conv1``) in plans and reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from netslim.errors import ConfigError

__all__ = ["ZOO", "get_zoo_model", "lenet300", "lenet5", "vgg_small", "resnet20", "resnet56"]

IMAGE_SIZE = 28
# Half the widths of the textbook 32-32-M-64-64-M-128-128-M: an epoch of 60k images then takes
# well under a minute on two CPU cores, and the model is still over-parameterised for pruning.
VGG_SMALL_CFG: tuple[int | str, ...] = (16, 16, "M", 32, 32, "M", 64, 64, "M")


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal weights for ReLU networks, zero biases, BN starting as the identity.

    Convs use fan-out (the ResNet convention); linears fan-in, so a 10-way classifier does not
    start with huge logits.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            mode = "fan_out" if isinstance(module, nn.Conv2d) else "fan_in"
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def lenet300(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-300-100: the classic 784-300-100-10 fully connected network."""
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * IMAGE_SIZE * IMAGE_SIZE, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )
    return init_weights(model)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 with ReLU and max-pooling; the first conv pads so 28×28 gives the classic 16×5×5."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return init_weights(model)


class VGGSmall(nn.Module):
    """VGG-style stack of conv3×3-BN-ReLU with max-pools, then one linear classifier.

    The BN scales are what network slimming penalises; the flatten feeding the classifier
    couples each last-stage channel to a block of classifier inputs.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, cfg: Sequence[int | str] = VGG_SMALL_CFG
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, IMAGE_SIZE
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            elif isinstance(item, int) and item > 0:
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(),
                ]
                channels = item
            else:
                raise ConfigError(
                    f"vgg_small cfg entries must be positive ints or 'M', got {item!r}"
                )
        if size < 1:
            raise ConfigError(
                f"vgg_small cfg {tuple(cfg)} pools a {IMAGE_SIZE}×{IMAGE_SIZE} input away"
            )
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels * size * size, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


def vgg_small(
    num_classes: int = 10, in_channels: int = 1, cfg: Sequence[int | str] = VGG_SMALL_CFG
) -> nn.Module:
    """The reference CNN of the demo (about 78k parameters with the default ``cfg``)."""
    return VGGSmall(num_classes, in_channels, cfg)


class BasicBlock(nn.Module):
    """Two conv3×3-BN layers plus a shortcut; a 1×1 conv-BN shortcut (option B) where the shape changes.

    Option B (rather than zero-padding) makes the residual add a plain tensor add of two
    convolution outputs, so structural pruning can tie their channels together.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): 16-32-64 stages of ``n`` basic blocks, depth 6n+2.

    On 28×28 inputs the stages run at 28, 14 and 7 pixels before global average pooling.
    """

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        if n < 1:
            raise ConfigError(f"a CIFAR ResNet needs at least one block per stage, got n={n}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet20(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """ResNet-20 (3 blocks per stage, ~0.27M parameters)."""
    return CifarResNet(3, num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """ResNet-56 (9 blocks per stage, ~0.86M parameters)."""
    return CifarResNet(9, num_classes, in_channels)


ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300,
    "lenet5": lenet5,
    "vgg_small": vgg_small,
    "resnet20": resnet20,
    "resnet56": resnet56,
}


def get_zoo_model(name: str, **kwargs: object) -> nn.Module:
    """Build a zoo model by name; unknown names and keyword arguments are :class:`ConfigError`."""
    factory = ZOO.get(name)
    if factory is None:
        raise ConfigError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}")
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        params = ", ".join(inspect.signature(factory).parameters)
        raise ConfigError(f"zoo model {name!r}: {exc} (accepted: {params})") from None
    return factory(**kwargs)
