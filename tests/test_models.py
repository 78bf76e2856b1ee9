"""Every architecture exposes features/head/feature_dim and handles its natural input size."""

from __future__ import annotations

import pytest
import torch

from advcore.models.architectures import MODELS, build_model

CASES = [
    ("small-cnn", dict(in_channels=1, image_size=8), {}),
    ("small-cnn", dict(in_channels=1, image_size=28), {"width": 8}),
    ("small-cnn", dict(in_channels=3, image_size=32), {"width": 8}),
    ("resnet18", dict(in_channels=3, image_size=32), {"width": 8}),
    ("resnet18", dict(in_channels=1, image_size=8), {"width": 8}),
    ("preact-resnet18", dict(in_channels=3, image_size=32), {"width": 8}),
    ("preact-resnet18", dict(in_channels=3, image_size=16), {"width": 8}),
    ("wrn", dict(in_channels=3, image_size=32), {"depth": 10, "widen_factor": 1}),
    ("wrn", dict(in_channels=3, image_size=32), {"depth": 16, "width": 1, "dropout": 0.3}),
    ("wrn-28-10", dict(in_channels=3, image_size=32), {"widen_factor": 1}),
]


@pytest.mark.parametrize("name,shape,kwargs", CASES)
def test_forward_features_head(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **shape, **kwargs).eval()
    x = torch.rand(3, shape["in_channels"], shape["image_size"], shape["image_size"])
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (3, 7)
    assert feats.shape == (3, model.feature_dim)
    assert model.head.in_features == model.feature_dim and model.head.out_features == 7
    assert torch.allclose(logits, model.head(feats))


def test_registry_names():
    assert {"small-cnn", "resnet18", "preact-resnet18", "wrn-28-10", "wrn-34-10", "wrn"} <= set(MODELS)


def test_feature_dims():
    kw = dict(num_classes=10, in_channels=3, image_size=32)
    assert build_model("resnet18", **kw).feature_dim == 512
    assert build_model("wrn", depth=10, widen_factor=2, **kw).feature_dim == 128
    assert build_model("small-cnn", **kw).feature_dim == 128


def test_normalisation_inside_model():
    torch.manual_seed(0)
    plain = build_model("small-cnn", num_classes=3, in_channels=3, image_size=8, width=4)
    normed = build_model("small-cnn", num_classes=3, in_channels=3, image_size=8, width=4,
                         mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    normed.load_state_dict({**plain.state_dict(), "mean": normed.mean, "std": normed.std})
    x = torch.rand(2, 3, 8, 8)
    expected = plain((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1))
    assert torch.allclose(normed(x), expected, atol=1e-6)
    assert "mean" in normed.state_dict() and "mean" not in plain.state_dict()
    with pytest.raises(ValueError, match="3 channels"):
        build_model("small-cnn", num_classes=3, in_channels=3, image_size=8, mean=[0.5], std=[0.5])


def test_small_cnn_trains_fast_and_learns():
    import time

    from advcore.data.datasets import Augment, Loader, load_dataset

    train, test, info = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = Loader(train, batch_size=64, seed=0, augment=Augment(info.augment_crop_padding, info.flip))
    start = time.perf_counter()
    for epoch in range(4):
        for batch in loader.epoch(epoch):
            loss = torch.nn.functional.cross_entropy(model(batch.x), batch.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert time.perf_counter() - start < 8  # about 0.15 s per epoch on 2 CPU cores
    with torch.no_grad():
        acc = (model(test.images.float() / 255).argmax(1) == test.labels).float().mean()
    assert acc > 0.7


def test_errors():
    with pytest.raises(ValueError, match=r"^unknown model 'vgg'; choose one of: small-cnn, resnet18") as err:
        build_model("vgg", num_classes=10, in_channels=3, image_size=32)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="has no option 'depth'"):
        build_model("wrn-28-10", num_classes=10, in_channels=3, image_size=32, depth=16)
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn", num_classes=10, in_channels=3, image_size=32, depth=12)


@pytest.mark.parametrize("capability, width, refused", [
    ("AVX2", 4, True),      # shortcut 1x1 stride-2 convolutions with 4 input channels
    ("AVX2", 8, False),
    ("AVX512", 4, False),   # the AVX-512 kernels are not affected
    ("DEFAULT", 4, False),
])
def test_training_a_network_the_avx2_kernel_would_corrupt_is_refused(monkeypatch, capability, width, refused):
    from advcore.errors import ConfigError
    from advcore.testing import tiny_config
    from advcore.engine import build_run

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    config = tiny_config(["pgd-at"], model={"arch": "resnet18", "width": width})
    if not refused:
        build_run(config, None)
        return
    with pytest.raises(ConfigError) as err:
        build_run(config, None)
    message = str(err.value)
    assert "\n" not in message
    assert "layers.1.0.shortcut.0" in message and "4 input channels" in message
    assert "model.width of 8 or more" in message
