"""Run configuration: pydantic models, TOML/YAML files and ``--set key=value`` overrides.

Every model forbids unknown keys, and every validation error becomes one line naming the
key and what is allowed.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..errors import ConfigError

__all__ = ["Budget", "PluginOptions", "RunConfig", "load_config", "apply_overrides", "validate_options", "format_validation_error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginOptions(_Section):
    """Base class for a plugin's options: unknown keys are errors, fields carry descriptions."""


def parse_bool_or_auto(value: Any) -> bool | str:
    """A switch that may also be "auto" (the engine decides by device): true/false, also as --set strings."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value not in (True, False, "auto"):
        raise ValueError(f"invalid value {value!r} (allowed: true, false, auto)")
    return value


BoolOrAuto = Annotated[bool | Literal["auto"], BeforeValidator(parse_bool_or_auto)]


_SUBSET_KIND = re.compile(r"^([a-z][a-z0-9_-]*):([1-9][0-9]*)$")


def parse_subset_spec(value: Any) -> int | str | None:
    """data.subset: a positive N (first N, class-balanced) or "KIND:N" (random:N, or a plugin's kind)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) >= 1:
            return int(text)
        if _SUBSET_KIND.match(text):
            return text
    raise ValueError(f"invalid value {value!r} (allowed: a positive count N, random:N, or KIND:N of an enabled "
                     "plugin's ranking)")


class DataConfig(_Section):
    dataset: str = Field("digits", description="digits, fashion-mnist, mnist, cifar10, cifar100, svhn, folder, or "
                                                "package.module:factory returning a torch Dataset (docs/python-api.md)")
    data_dir: str | None = Field(None, description="folder with the dataset files")
    download: bool = Field(False, description="let torchvision download CIFAR/SVHN")
    subset: int | str | None = Field(
        None, description="first N training samples, class-balanced; random:N (class-balanced at random); or "
                          "KIND:N ranked by an enabled plugin (advcore_training_subset)")
    batch_size: int = Field(128, ge=1, description="training batch size per process")
    eval_batch_size: int = Field(256, ge=1, description="batch size of the per-epoch evaluation")
    augment: bool = Field(True, description="random crop with padding and horizontal flip")
    pad_fill: Annotated[float, Field(ge=0, le=1)] | Literal["reflect"] = Field(
        0.0, description="crop border: a constant in [0, 1] (0 RAAT/HAT/HE code, 0.5 ATTA/004 code) or reflect "
                         "(AWP/IAAT code)")
    extra: str | None = Field(None, description=".npz with images and pseudo-labels mixed into each batch")
    extra_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of data.extra samples in each batch: floor(f * global batch) of them "
                                     "(0.7 in HAT Sec. 5.3 / Gowal et al.)")
    on_device: BoolOrAuto = Field(
        "auto", description="keep the uint8 training set on the device (crop/flip run there too); "
                            "auto = on CUDA when it is under 2 GiB")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from ..factories import is_factory

        names = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "folder")
        if value not in names and not is_factory(value):
            raise ValueError(f"invalid value {value!r} (allowed: {', '.join(map(repr, names))}, "
                             f"or package.module:factory)")
        return value

    @field_validator("subset", mode="before")
    @classmethod
    def _subset_spec(cls, value: Any) -> int | str | None:
        return parse_subset_spec(value)

    @field_validator("extra_fraction")
    @classmethod
    def _fraction_needs_extra(cls, value: float, info: ValidationInfo) -> float:
        """A share of nothing is a typo or a forgotten data.extra: say so rather than train without extra data."""
        if value != 0.5 and info.data.get("extra") is None:
            raise ValueError(f"{value:g} is the share of data.extra samples per batch, but data.extra is not set; "
                             "pass --set data.extra=FILE.npz or drop data.extra_fraction")
        return value


class ModelConfig(_Section):
    arch: str = Field("auto", description="small-cnn, resnet18, preact-resnet18, wrn-28-10, wrn-34-10 or auto")
    width: int | None = Field(None, ge=1, description="width of small-cnn")
    normalize: bool = Field(False, description="normalise inputs with the dataset mean/std inside the model")
    factory: str | None = Field(None, description="package.module:factory building your own nn.Module (replaces arch)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of model.factory")

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        from ..factories import is_factory

        if value is not None and not is_factory(value):
            raise ValueError(f"{value!r} is not of the form package.module:factory")
        return value

    @model_validator(mode="after")
    def _factory_replaces_arch(self) -> "ModelConfig":
        if self.factory and (self.arch != "auto" or self.width is not None or self.normalize):
            raise ValueError("model.factory replaces model.arch, model.width and model.normalize; "
                             "pass the factory's own options as model.kwargs.NAME")
        return self


class OptimConfig(_Section):
    lr: float = Field(0.1, gt=0, description="peak learning rate of SGD")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay of SGD")
    schedule: Literal["constant", "step", "cosine", "onecycle"] = Field("cosine", description="learning-rate schedule over the run, stepped per batch")
    milestones: list[int] = Field(default_factory=list, description="epochs where the step schedule decays")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor of the step schedule")
    pct_start: float = Field(0.25, gt=0, lt=1, description="warm-up fraction of the one-cycle schedule")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up of the learning rate over this many epochs "
                                                        "(per batch, from warmup_start x lr to lr), then the schedule "
                                                        "over the remaining epochs; 0: none")
    warmup_start: float = Field(1e-3, gt=0, le=1, description="learning rate of the first warm-up batch, as a "
                                                              "fraction of lr")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value (none: no clipping)")


def parse_fraction(value: Any) -> Any:
    """Budgets may be written as papers write them: ``"8/255"`` (other values pass unchanged)."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read {value!r} as a number; write e.g. 0.03137 or 8/255") from None
    return value


Budget = Annotated[float, BeforeValidator(parse_fraction)]


class AttackConfig(_Section):
    norm: Literal["Linf", "L2"] = Field(
        "Linf", description="threat model of training and of the per-epoch evaluation: the Linf (max-pixel) or L2 "
                            "(Euclidean) ball of radius eps around each input")
    eps: Budget | None = Field(None, gt=0, description="budget, the ball's radius (0.0314 or 8/255; at most 1 for "
                                                       "Linf); default: the dataset's Linf budget, L2 needs one")
    step_size: Budget | None = Field(None, gt=0, description="default eps/4")
    steps: int = Field(10, ge=1, description="iterations of the training attack (PGD-K)")
    model_mode: Literal["auto", "eval", "train"] = Field(
        "auto", description="model mode while examples are generated; auto = the objective's published mode")

    @field_validator("eps", "step_size")
    @classmethod
    def _linf_at_most_one(cls, value: float | None, info: ValidationInfo) -> float | None:
        """An Linf radius above 1 covers the whole [0, 1] box; L2 radii grow with the image size."""
        if value is not None and value > 1 and info.data.get("norm", "Linf") == "Linf":
            raise ValueError(f"Input should be less than or equal to 1 (got {value:g}) for attack.norm=Linf; "
                             f"larger budgets need attack.norm=L2")
        return value

    @model_validator(mode="after")
    def _l2_needs_a_budget(self) -> "AttackConfig":
        if self.norm == "L2" and self.eps is None:
            raise ValueError("norm L2 needs an explicit attack.eps (the dataset default is a Linf budget); "
                             "set one, e.g. --set attack.eps=128/255")
        return self


class EvalConfig(_Section):
    n: int = Field(500, ge=1, description="held-out test samples of the final evaluation (the last epoch's)")
    epoch_n: int | None = Field(
        64, ge=1, description="held-out samples evaluated after the other epochs, the first of eval.n's "
                               "(same PGD; they also pick the best checkpoint); None = eval.n every epoch")
    pgd_steps: int = Field(20, ge=1, description="PGD iterations of the per-epoch robust accuracy")
    restarts: int = Field(1, ge=1, description="random restarts of that PGD")
    every: int = Field(1, ge=1, description="evaluate every N epochs (and always at the end)")


class EmaConfig(_Section):
    """Exponential moving average of the weights, saved as ema.* tensors and evaluated each epoch."""

    decay: float | None = Field(None, gt=0, lt=1, description="EMA decay, e.g. 0.999; None turns EMA off")
    warmup: bool = Field(True, description="use min(decay, (1+t)/(10+t)) so early averages forget the init")


class SpeedConfig(_Section):
    """Execution options that change how fast a step runs, not what it computes (see docs/performance.md)."""

    channels_last: BoolOrAuto = Field(
        "auto", description="channels-last memory format for the model and its inputs; auto = on the CPU, where it "
                            "was measured 1.2-1.5x faster for the methods with an attack (docs/performance.md), off "
                            "on CUDA until measured there")
    keep_host_memory: BoolOrAuto = Field(
        "auto", description="keep freed host memory in the process (glibc's allocator stops returning it to the OS "
                            "and serves large tensors from its heap) instead of page-faulting it back every step; "
                            "auto = when training on the CPU, where it was measured 1.1-1.4x faster "
                            "(docs/performance.md); it stays set for the rest of the process")
    autocast: Literal["off", "bf16"] = Field("off", description="bf16 autocast of attack and training forwards "
                                                                "(logits and losses stay float32)")
    compile: bool = Field(False, description="torch.compile the model used by attack and training passes")
    compile_backend: str = Field("inductor", description="torch.compile backend (inductor; aot_eager for debugging)")

    @field_validator("compile_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value in ("inductor", "eager", "aot_eager"):  # always there: no need to import torch to check
            return value
        import torch._dynamo

        known = [*torch._dynamo.list_backends(), "eager", "aot_eager"]
        if value not in known:
            raise ValueError(f"unknown torch.compile backend {value!r} (allowed: {', '.join(sorted(known))})")
        return value


class CheckpointConfig(_Section):
    """In-epoch checkpoints (besides the one after every epoch), so ``kill -9`` loses little work."""

    every_steps: int | None = Field(None, ge=1, description="also write checkpoints/last every N training steps")
    every_seconds: float | None = Field(None, gt=0, description="also write checkpoints/last when this many seconds "
                                                                "passed since the previous one")


class RecipeRef(_Section):
    """Which paper recipe a run came from, so ``advcore report`` can set its numbers beside the paper's."""

    name: str
    twin: bool = Field(False, description="the scaled-down Fashion-MNIST twin, not the paper-scale run")


class RunConfig(_Section):
    recipe: RecipeRef | None = Field(None, description="set by 'advcore train --recipe'")
    plugins: list[str] = Field(default_factory=list, description="enabled plugins (--plugin); the run uses them in canonical order")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-plugin options")
    epochs: int = Field(5, ge=1, description="training epochs")
    seed: int = Field(0, ge=0, lt=2**63, description="random seed of data order, augmentation, initialisation and "
                                                     "attacks, 0 <= seed < 2**63 (torch's generator range)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    deterministic: bool = Field(False, description="deterministic algorithms (bitwise resume on CPU)")
    init_from: str | None = Field(None, description="checkpoint whose model weights start the run")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _milestones_inside_run(self) -> "RunConfig":
        late = [m for m in self.optim.milestones if m >= self.epochs or m < 1]
        if late:
            raise ValueError(
                f"optim.milestones {late} lie outside the run's epochs 1..{self.epochs - 1}; "
                f"lower them or raise epochs"
            )
        return self

    @model_validator(mode="after")
    def _warmup_inside_run(self) -> "RunConfig":
        o = self.optim
        if not o.warmup_epochs:
            return self
        if o.schedule == "onecycle":
            raise ValueError("optim.warmup_epochs cannot be combined with optim.schedule=onecycle, which warms up by "
                             "itself (optim.pct_start); drop optim.warmup_epochs or choose another schedule")
        if o.warmup_epochs >= self.epochs:
            raise ValueError(f"optim.warmup_epochs {o.warmup_epochs:g} must be shorter than the run's {self.epochs} "
                             f"epochs; lower it or raise epochs")
        early = [m for m in o.milestones if m <= o.warmup_epochs]
        if o.schedule == "step" and early:
            raise ValueError(f"optim.milestones {early} fall inside the {o.warmup_epochs:g}-epoch warm-up; "
                             f"move them after optim.warmup_epochs or shorten the warm-up")
        return self


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``key: what is wrong (allowed: ...)``."""
    lines = []
    for err in exc.errors():
        key = (prefix + ".".join(str(p) for p in err["loc"])).rstrip(".")  # a model validator has no field
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msg = f"invalid value {err['input']!r} (allowed: {allowed})"
        elif err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", msg))
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{key}: {msg}" if key else msg)
    return "; ".join(lines)


def _config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    return ConfigError("invalid configuration: " + format_validation_error(exc, prefix))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .toml or .yaml file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise ConfigError(f"config file {path} could not be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings at the top level")
    return data


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON when they parse as JSON (numbers, true, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (a copy is returned)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} needs the form key=value, e.g. --set attack.eps=0.1")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r} has an empty key; use e.g. --set attack.eps=0.1")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"--set {item!r}: {part} is a value, not a section")
            node = node[part]
        node[parts[-1]] = _parse_value(value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                base: dict[str, Any] | None = None, **fields: Any) -> RunConfig:
    """Recipe (``base``), then file, then explicit fields (CLI flags), then ``--set`` overrides; validated."""
    data: dict[str, Any] = json.loads(json.dumps(base or {}))
    if path:
        _merge(data, read_config_file(path))
    for key, value in fields.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    """Deep-merge ``data`` into ``into``: tables merge key by key, values replace."""
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def validate_options(name: str, model: type[BaseModel] | None, values: dict[str, Any]) -> BaseModel | None:
    """Validate one plugin's options; errors name the key as ``options.<plugin>.<key>``."""
    if model is None:
        if values:
            raise ConfigError(f"options.{name}: plugin '{name}' takes no options (got {sorted(values)})")
        return None
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc, prefix=f"options.{name}.") from None
