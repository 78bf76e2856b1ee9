"""Classifiers with a common shape: ``features(x)`` -> [B, D], ``head`` = Linear(D, classes).

Plugins reach the penultimate features and the classifier through these two names, so every
architecture exposes them. Inputs are in [0, 1]; optional per-channel normalisation lives inside
the model so attacks always work in pixel space.

The model protocol (any ``nn.Module``, e.g. from ``model.factory``): ``model(x)`` maps inputs
in [0, 1] of shape [B, C, H, W] to logits [B, K]; that is all training, evaluation and most
plugins need. Plugins that swap the classifier (HE) or read the penultimate features also
need ``features(x)`` -> [B, D] and ``head``, an ``nn.Linear(D, K)``, with
``model(x) == head(features(x))``; ``require_features_head`` says in one line what is missing.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MODELS", "build_model", "build_user_model", "require_features_head", "Classifier", "SmallCNN", "ResNet18", "PreActResNet18", "WideResNet"]


class Classifier(nn.Module):
    """Base: normalisation buffers, ``forward = head(features(x))``; subclasses define ``_features``."""

    feature_dim: int
    head: nn.Linear

    def __init__(self, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std for input normalisation, or neither")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) != in_channels:
                raise ValueError(f"{name} has {len(value)} values but the input has {in_channels} channels")
            self.register_buffer(name, None if value is None else torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self.normalize(x))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)


class SmallCNN(Classifier):
    """Two convolutions and one hidden layer: fast enough for CPU runs on digits and MNIST."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 32, hidden: int = 128,
                 mean=None, std=None):
        super().__init__(in_channels, mean, std)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # 8x8 digits pool to exactly 4x4
        )
        self.fc = nn.Sequential(nn.Linear(2 * width * 16, hidden), nn.ReLU())
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, num_classes)
        for m in [*self.body, *self.fc]:  # He init: PyTorch's default shrinks the signal and stalls early epochs
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _features(self, x):
        return self.fc(self.body(x))


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _shortcut(cin: int, cout: int, stride: int, bn: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else conv


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride, bn=True)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class PreActBlock(nn.Module):
    """BN-ReLU before each conv (He et al. 2016); also the Wide-ResNet block, with optional dropout."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3(cout, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _shortcut(cin, cout, stride, bn=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(act)
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(act)))))
        return out + skip


def _stage(block: Callable[..., nn.Module], cin: int, cout: int, n: int, stride: int, **kw) -> nn.Sequential:
    return nn.Sequential(*(block(cin if i == 0 else cout, cout, stride if i == 0 else 1, **kw) for i in range(n)))


class ResNet18(Classifier):
    """CIFAR-style ResNet-18 (3x3 stride-1 stem); global pooling keeps it valid for small images."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int = 32, width: int = 64,
                 mean=None, std=None, preact: bool = False):
        super().__init__(in_channels, mean, std)
        block = PreActBlock if preact else BasicBlock
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = _conv3(in_channels, width)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(width)
        self.layers = nn.Sequential(*(_stage(block, cin, cout, 2, s) for cin, cout, s in
                                      zip([width] + widths[:-1], widths, [1, 2, 2, 2])))
        self.final_bn = nn.BatchNorm2d(widths[-1]) if preact else nn.Identity()
        self.preact = preact
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _features(self, x):
        out = self.stem(x)
        out = out if self.preact else F.relu(self.stem_bn(out))
        out = self.layers(out)
        if self.preact:
            out = F.relu(self.final_bn(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class PreActResNet18(ResNet18):
    def __init__(self, num_classes: int, in_channels: int, image_size: int = 32, width: int = 64, mean=None, std=None):
        super().__init__(num_classes, in_channels, image_size, width, mean, std, preact=True)


class WideResNet(Classifier):
    """WRN-depth-k (Zagoruyko & Komodakis 2016): (depth - 4) / 6 pre-activation blocks per stage."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int = 32, depth: int = 28,
                 widen_factor: int = 10, dropout: float = 0.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"wrn depth must be 6n+4 with n >= 1 (e.g. 10, 16, 28, 34), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = _conv3(in_channels, widths[0])
        self.layers = nn.Sequential(*(_stage(PreActBlock, widths[i], widths[i + 1], n, s, dropout=dropout)
                                      for i, s in enumerate([1, 2, 2])))
        self.final_bn = nn.BatchNorm2d(widths[-1])
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _features(self, x):
        out = F.relu(self.final_bn(self.layers(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def _wrn(num_classes, in_channels, image_size, *, depth: int = 28, widen_factor: int = 10,
         width: int | None = None, dropout: float = 0.0, mean=None, std=None) -> WideResNet:
    """Generic WRN; ``width`` (the config's model.width) is read as the widen factor."""
    return WideResNet(num_classes, in_channels, image_size, depth, width or widen_factor, dropout, mean, std)


def _wrn_fixed(depth: int):
    def build(num_classes, in_channels, image_size, *, widen_factor: int = 10, width: int | None = None,
              dropout: float = 0.0, mean=None, std=None) -> WideResNet:
        return _wrn(num_classes, in_channels, image_size, depth=depth, widen_factor=widen_factor, width=width,
                    dropout=dropout, mean=mean, std=std)
    return build


MODELS: dict[str, Callable[..., Classifier]] = {
    "small-cnn": SmallCNN,
    "resnet18": ResNet18,
    "preact-resnet18": PreActResNet18,
    "wrn-28-10": _wrn_fixed(28),
    "wrn-34-10": _wrn_fixed(34),
    "wrn": _wrn,
}


def avx2_weight_gradient_hazard(model: nn.Module, device: torch.device) -> str | None:
    """Why training ``model`` on this CPU would corrupt memory, or None.

    oneDNN's AVX2 kernel for the weight gradient of a strided 1x1 convolution with fewer
    than 8 input channels (PyTorch 2.14.1, oneDNN 3.12) writes outside its buffer: the
    process dies later, or worse, goes on with damaged memory. Only CPUs whose best kernels
    are AVX2 are affected (AVX-512 and AMX machines, CUDA and oneDNN switched off are not).
    """
    if device.type != "cpu" or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        return None
    for name, m in model.named_modules():
        if (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 8
                and m.weight.requires_grad):
            return (f"{name} is a strided 1x1 convolution with {m.in_channels} input channels, whose weight "
                    f"gradient PyTorch's oneDNN kernel computes out of bounds on this AVX2 CPU (memory "
                    f"corruption); use model.width of 8 or more, or a CUDA device")
    return None


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    """Build a registered architecture; bad names or options raise a one-line ValueError."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    factory = MODELS[name]
    params = inspect.signature(factory).parameters
    allowed = sorted(k for k in params if k not in ("num_classes", "in_channels", "image_size", "preact"))
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ValueError(f"model {name!r} has no option {bad[0]!r}; allowed: {', '.join(allowed)}")
    return factory(num_classes, in_channels, image_size, **kwargs)


def build_user_model(factory: str, kwargs: dict | None = None) -> nn.Module:
    """Call a ``package.module:factory`` (with ``model.kwargs``); it must return an nn.Module."""
    from ..errors import ConfigError
    from ..factories import load_factory

    fn = load_factory(factory, "model.factory")
    try:
        model = fn(**(kwargs or {}))
    except TypeError as exc:
        raise ConfigError(f"model.factory: {factory}(**{kwargs or {}}) failed ({exc}); "
                          f"pass its arguments as --set model.kwargs.NAME=VALUE") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {factory} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_user_model(model: nn.Module, x: torch.Tensor, num_classes: int, source: str) -> None:
    """One-line errors, before training, for a model that cannot take the data's inputs or classes."""
    from ..errors import ConfigError

    was_training = model.training
    model.eval()  # no BatchNorm statistics move
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"model.factory: {source} fails on the data's inputs of shape {tuple(x.shape)} "
                          f"({type(exc).__name__}: {first}); build it for these images") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model.factory: {source} returns {shape} for {x.shape[0]} inputs; it must return "
                          f"logits [B, classes]")
    if out.shape[1] < num_classes:
        raise ConfigError(f"model.factory: {source} gives {out.shape[1]} logits but the data has {num_classes} "
                          f"classes; pass --set model.kwargs.num_classes={num_classes} (or its own option)")


def require_features_head(model: nn.Module, plugin: str) -> None:
    """One-line error unless ``model`` offers ``features(x)`` and an ``nn.Linear`` ``head``."""
    from ..errors import PluginError

    has_features = callable(getattr(model, "features", None))
    head = getattr(model, "head", None)
    if has_features and isinstance(head, nn.Linear):
        return
    missing = [] if has_features else ["features(x)"]
    if not isinstance(head, nn.Linear):
        missing.append("an nn.Linear head" + ("" if head is None else f" (its head is a {type(head).__name__})"))
    raise PluginError(f"plugin '{plugin}' needs a model with features(x) and an nn.Linear head; "
                      f"{type(model).__name__} lacks {' and '.join(missing)}; add them (model protocol, "
                      f"docs/python-api.md) or use an advcore model (small-cnn, resnet18, preact-resnet18, wrn)")
