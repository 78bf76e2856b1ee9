"""Speed options change how fast a step runs, not what it computes; passes per step are the minimum.

Each option is checked against the eager float32 step on the same batch and seed (bf16 within
its rounding error, the others to float32 rounding), and the forward passes of one step are
counted per method against the table in docs/performance.md.
"""

from __future__ import annotations

import pytest
import torch

from advcore.kernel.config import load_config
from advcore.errors import ConfigError
from advcore.kernel.plugins import installed_plugins
from advcore.runtime.speed import Forward, wants_device
from advcore.testing import tiny_batch, tiny_config, tiny_run
from advcore.engine import build_run, train_step, write_checkpoint

K = 3  # attack steps of tiny_config


def two_steps(**speed):
    """Loss of two pgd-at steps on one batch and the weights after them."""
    torch.manual_seed(0)
    run = tiny_run(["pgd-at"], speed={"channels_last": False, **speed})  # eager float32, contiguous: the reference
    batch = tiny_batch(run, 32)
    losses = [train_step(run, batch, 0, i).loss.item() for i in range(2)]
    return run, losses, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


@pytest.fixture(scope="module")
def eager():
    return two_steps()


@pytest.mark.parametrize("speed, rtol", [
    ({"channels_last": True}, 1e-5),
    ({"compile": True, "compile_backend": "aot_eager"}, 1e-5),  # dynamo capture + AOT autograd, no C++ build
    ({"autocast": "bf16"}, 3e-2),
])
def test_option_keeps_the_math(eager, speed, rtol):
    _, want_losses, want_weights = eager
    run, losses, weights = two_steps(**speed)
    assert losses == pytest.approx(want_losses, rel=rtol)
    for key, want in want_weights.items():
        torch.testing.assert_close(weights[key], want, rtol=rtol, atol=rtol * 0.1, msg=key)
    models = run.stash["advcore.models"]
    if speed.get("compile"):
        assert isinstance(models.attack, torch._dynamo.eval_frame.OptimizedModule)
    if speed.get("channels_last"):
        conv = run.model.body[2].weight  # the first conv has one input channel: both layouts agree
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_channels_last_auto_is_on_for_the_cpu_only():
    """The default: on where benchmarks/overhead.py measured it faster (the CPU), off on CUDA until measured."""
    from advcore.kernel.config import load_config
    from advcore.runtime.speed import cpu_default_on

    assert load_config(None, []).speed.channels_last == "auto"
    assert cpu_default_on("auto", torch.device("cpu")) and not cpu_default_on("auto", torch.device("cuda"))
    assert cpu_default_on(True, torch.device("cuda")) and not cpu_default_on(False, torch.device("cpu"))
    assert load_config(None, ["speed.channels_last=false"]).speed.channels_last is False
    run = tiny_run(["pgd-at"])  # the default on the CPU: the model's convolutions are channels-last
    assert run.model.body[2].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_runs_the_layers_in_bf16_and_returns_float32_logits():
    run = tiny_run(["pgd-at"], speed={"autocast": "bf16"})
    forward = run.stash["advcore.models"].attack
    assert isinstance(forward, Forward)
    x = tiny_batch(run, 8).x
    inner_dtypes = []
    handle = run.model.head.register_forward_hook(lambda m, i, o: inner_dtypes.append(o.dtype))
    logits = forward(x)
    handle.remove()
    full = run.model(x)
    assert inner_dtypes == [torch.bfloat16] and logits.dtype == torch.float32
    assert not torch.equal(logits, full)  # rounded ...
    torch.testing.assert_close(logits, full, rtol=0.05, atol=0.05)  # ... but the same function
    assert forward.head is run.model.head and forward.feature_dim == run.model.feature_dim


def test_speed_and_data_keys_are_validated():
    with pytest.raises(ConfigError, match=r"speed\.autocast: invalid value 'fp16' \(allowed: 'off' or 'bf16'\)"):
        load_config(None, ["speed.autocast=fp16"])
    with pytest.raises(ConfigError, match=r"speed\.compile_backend: unknown torch\.compile backend 'fast'.*inductor"):
        load_config(None, ["speed.compile_backend=fast"])
    with pytest.raises(ConfigError, match=r"data\.on_device: invalid value 'gpu' \(allowed: true, false, auto\)"):
        load_config(None, ["data.on_device=gpu"])
    with pytest.raises(ConfigError, match=r"speed\.jit: unknown key"):
        load_config(None, ["speed.jit=true"])


def test_on_device_auto_moves_small_training_sets_to_cuda_only(monkeypatch):
    run = tiny_run(["pgd-at"])
    ds = run.train_set
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert wants_device(ds, cuda, "auto") and not wants_device(ds, cpu, "auto")
    assert wants_device(ds, cpu, True) and not wants_device(ds, cuda, False)
    monkeypatch.setattr("advcore.runtime.speed.ON_DEVICE_LIMIT", ds.images.numel() - 1)
    assert not wants_device(ds, cuda, "auto")


def test_on_device_batches_match_host_batches():
    """data.on_device only changes where the uint8 set lives; the batches are the same."""
    runs = [build_run(tiny_config(["pgd-at"], data={"on_device": flag}), None) for flag in (True, False)]
    for a, b in zip(*(loader.epoch(1) for _, loader in runs)):
        assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index) and torch.equal(a.crop, b.crop)


# --- passes per step ---------------------------------------------------------------------

def _standard_checkpoint(tmp_path):
    run, _ = build_run(tiny_config(["standard"]), tmp_path)
    write_checkpoint(run, "last", epoch=1)
    return str(tmp_path / "checkpoints" / "last")


# method -> (plugins, options, epoch, forwards of run.model in one step, parameter backwards)
PASSES = {
    "pgd-at": (["pgd-at"], {}, 0, lambda s: K + 1),
    "trades": (["trades"], {}, 0, lambda s: 1 + K + 2),   # p_clean once, K attack, clean + adv
    "mart": (["mart"], {}, 0, lambda s: K + 2),           # "attack" and "adv" share one forward
    "alp": (["alp"], {}, 0, lambda s: K + 2),
    "hat": (["hat"], {}, 0, lambda s: 1 + K + 3),         # + clean, adv, helper (std net not counted)
    "fast-atta": (["fast-atta"], {}, 0, lambda s: 1 + 1),  # one cached step + the training forward
    "hat+fast-atta": (["hat", "fast-atta"], {}, 0, lambda s: 1 + 1 + 3),  # p_clean, cached step, HAT's three
    "raat": (["raat"], {}, 0, lambda s: K + 3 + 2 + (s.records["raat.dicar_pairs"][0] > 0)),
    "iaat-warmup": (["iaat"], {}, 0, lambda s: 1 + K + 1),
    "iaat": (["iaat"], {"iaat": {"warmup": 0}}, 0, lambda s: 1 + 2 * (K + 1) + K + 1),
    "free": (["free"], {"free": {"replays": 4}}, 0, lambda s: 4),
}


@pytest.mark.parametrize("method", list(PASSES))
def test_forward_passes_per_step_are_the_minimum(method, tmp_path):
    plugins, options, epoch, expected = PASSES[method]
    if not set(plugins) <= set(installed_plugins()):
        pytest.skip(f"plugin {plugins[0]} is not installed")
    if "hat" in plugins:
        options = {"hat": {"std_checkpoint": _standard_checkpoint(tmp_path)}}
    run = tiny_run(plugins, options)
    forwards, weight_grads = [], []
    run.model.register_forward_pre_hook(lambda m, i: forwards.append(i[0].shape[0]))
    next(run.model.parameters()).register_hook(lambda g: weight_grads.append(1))
    step = train_step(run, tiny_batch(run, 16), epoch, 0)
    assert len(forwards) == expected(step)
    assert len(weight_grads) == run.replays  # attacks take no parameter gradient: one backward per update


class FrozenNorm(torch.nn.BatchNorm2d):
    """A module with its own train(): stays in eval mode (a common BN-freezing pattern)."""

    def train(self, mode: bool = True):
        return super().train(False)


@pytest.mark.parametrize("arch", ["small-cnn", "resnet18"])
def test_set_mode_leaves_every_module_as_module_train_would(arch):
    from advcore.attacks import set_mode
    from advcore.models.architectures import build_model

    ours = build_model(arch, num_classes=10, in_channels=1, image_size=8, width=8)
    reference = build_model(arch, num_classes=10, in_channels=1, image_size=8, width=8)
    ours.head.eval()  # a mixed state to start from
    reference.head.eval()
    for training in (False, True, True, False):
        set_mode(ours, training)
        reference.train(training)
        assert [m.training for m in ours.modules()] == [m.training for m in reference.modules()]
        assert {m.training for m in ours.modules()} == {training}


def test_set_mode_calls_a_submodules_own_train():
    from advcore.attacks import set_mode

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), FrozenNorm(8), torch.nn.ReLU())
    set_mode(model, False)
    set_mode(model, True)
    assert model.training and model[0].training and model[2].training
    assert not model[1].training  # its own train() kept it frozen


HOST_MEMORY_PROBE = """
import resource, sys, torch
from advcore.engine import build_run
from advcore.testing import tiny_config
build_run(tiny_config(["standard"], speed={"keep_host_memory": sys.argv[1]}), None)
faults = []
for _ in range(9):  # 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 2**20)
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[1:])[4])  # the median of the allocations after the first
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="speed.keep_host_memory acts on glibc")
@pytest.mark.parametrize("setting, kept", [("auto", True), ("true", True), ("false", False)])
def test_keep_host_memory_stops_freed_blocks_page_faulting_back(setting, kept):
    """A 64 MiB tensor freed and made again costs 16,384 page faults each time under glibc's defaults
    (mmap, munmap); with the option on (auto: training on the CPU) it is served again from the heap
    (the median over eight: a small allocation landing in the freed block can make one grow the heap)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HOST_MEMORY_PROBE, setting], capture_output=True, text=True, check=True)
    faults = int(out.stdout.split()[-1])  # the median allocation after the first
    pages = (64 << 20) // 4096
    assert (faults < pages // 20) if kept else (faults > pages * 0.9), faults


def test_keep_host_memory_is_for_cpu_training_only():
    from advcore.runtime.speed import keep_host_memory

    assert load_config(None, []).speed.keep_host_memory == "auto"
    assert keep_host_memory("auto", torch.device("cuda")) is False and keep_host_memory(False, torch.device("cpu")) is False
    assert load_config(None, ["speed.keep_host_memory=false"]).speed.keep_host_memory is False
