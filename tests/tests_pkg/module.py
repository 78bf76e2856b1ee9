"""A model and data that advcore knows nothing about (used by tests through ``package.module:factory``)."""

import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset


class TinyNet(nn.Module):
    """Offers the model protocol's features(x) and head, so HE can swap the head."""

    def __init__(self, num_classes: int = 10, channels: int = 1, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Linear(4 * width, 16), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def factory(num_classes: int = 10, width: int = 8):
    return TinyNet(num_classes=num_classes, width=width)


def plain(num_classes: int = 10):
    """No features()/head: only logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def data(train: bool = True):
    """Digits-like 1x8x8 images in [0, 1], labels a function of the image (learnable)."""
    g = torch.Generator().manual_seed(0 if train else 1)
    n = 192 if train else 64
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for k in range(4):  # a bright quadrant per class
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.6
    return TensorDataset(x.clamp(0, 1), y)


class Jittered(Dataset):
    """Random noise on every read: indices are not stable."""

    def __init__(self, train: bool = True):
        self.base = data(train)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (x + 0.01 * torch.rand_like(x)).clamp(0, 1), y


def jittered(train: bool = True):
    return Jittered(train)


def rgb(train: bool = True):
    """3x16x16 colour images (for torchvision's resnet18): the class is the brightest channel."""
    g = torch.Generator().manual_seed(2 if train else 3)
    n = 64 if train else 32
    y = torch.arange(n) % 3
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    x[torch.arange(n), y] += 0.4
    return TensorDataset(x.clamp(0, 1), y)
