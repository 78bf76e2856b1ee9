"""Helpers for testing plugins on a tiny model and batch (also used by advcore's own tests).

``check_plugin("my-plugin")`` is the conformance kit: call it from a plugin's own test
suite and it runs every hook contract on a tiny model and batch, naming the hook of each
problem. ``tiny_run`` builds a real run (digits data, a small CNN, the real plugin
manager) and ``tiny_batch`` a fixed batch from its training set, so a plugin's hooks can
be exercised one step at a time with ``advcore.engine.train_step``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from .attacks import model_mode
from .runtime.checkpoint import load_checkpoint, seal_manifest
from .kernel.config import RunConfig, format_validation_error, validate_options
from .kit.conformance import PROBE, Problem, Probe, difference, first_difference, hook_named_in, implementers, snapshot
from .data.datasets import Batch
from .errors import AdvcoreError, PluginError
from .evaluation.evaluate import load_model
from .models.architectures import SmallCNN
from .kernel.plugins import Installed, _plugin_info, installed_plugins, resolve
from .kernel.run import Run
from .engine import build_run, epoch_seed, evaluate_run, lr_at, restore_checkpoint, train, train_step, write_checkpoint

__all__ = ["tiny_config", "tiny_run", "tiny_batch", "check_plugin", "ConformanceReport", "ConformanceError",
           "Problem", "BASELINES", "CHECK_CONFIG", "train", "train_step", "load_checkpoint", "load_model", "resolve",
           "validate_options", "lr_at", "SmallCNN", "run_cli", "seal_manifest"]


def run_cli(args: list[str]):
    """Run ``advcore ARGS`` in this process (typer's CliRunner); the result has ``exit_code`` and ``output``."""
    from typer.testing import CliRunner

    from .cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def tiny_config(plugins: list[str], options: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> RunConfig:
    """A CPU config on digits with a narrow small CNN; ``overrides`` are top-level fields or sections."""
    data: dict[str, Any] = {
        "plugins": plugins, "options": options or {}, "epochs": 2, "device": "cpu",
        "data": {"dataset": "digits", "batch_size": 32, "subset": 200},
        "model": {"arch": "small-cnn", "width": 8},
        "eval": {"n": 64, "pgd_steps": 5},
        "attack": {"steps": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunConfig.model_validate(data)


def tiny_run(plugins: list[str], options: dict[str, dict[str, Any]] | None = None, out=None, **overrides: Any) -> Run:
    """A run ready for ``train_step``; ``run_start`` hooks have been called."""
    run, loader = build_run(tiny_config(plugins, options, **overrides), out)
    run.hooks.on_run_start(run)
    return run


def tiny_batch(run: Run, size: int = 16, start: int = 0) -> Batch:
    """The first ``size`` training samples, unaugmented, as a Batch (views copied if asked for)."""
    index = torch.arange(start, start + size)
    x = run.train_set.images[index].float().div(255).to(run.device)
    y = run.train_set.labels[index].to(run.device)
    views = [Batch(x=x.clone(), y=y, index=index, crop=None, flip=None, views=[]) for _ in range(run.views - 1)]
    return Batch(x=x, y=y, index=index.to(run.device), crop=None, flip=None, views=views)


# --- the conformance kit ------------------------------------------------------------------

BASELINES = ("standard", "pgd-at", "trades", "mart", "alp", "pgd", "fgsm-rs", "free")
"""The built-in objectives and adversaries every plugin is composed with (when installed)."""

CHECK_CONFIG: dict[str, dict[str, Any]] = {
    "data": {"batch_size": 8, "subset": 64}, "model": {"arch": "small-cnn", "width": 4},
    "attack": {"steps": 2}, "eval": {"n": 8, "pgd_steps": 1},
}
"""The tiny setup ``check_plugin`` runs on; its ``**overrides`` change it section by section."""


@dataclass
class ConformanceReport:
    """What ``check_plugin`` found: checks that passed, compositions refused, problems."""

    plugin: str
    """The plugin checked."""
    passed: list[str] = field(default_factory=list)
    """Names of the checks that passed."""
    refused: dict[str, str] = field(default_factory=dict)
    """Partner -> the one-line error that refused the composition."""
    problems: list[Problem] = field(default_factory=list)
    """Every broken contract found."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def hooks(self) -> set[str]:
        """The hooks named by the problems."""
        return {p.hook for p in self.problems}

    def add(self, problem: Problem) -> None:
        """Keep the first of problems of one kind (same hook, same text up to the first colon)."""
        kind = (problem.hook, problem.message.split(":")[0])
        if not any((p.hook, p.message.split(":")[0]) == kind for p in self.problems):
            self.problems.append(problem)

    def __str__(self) -> str:
        if self.ok:
            return f"plugin '{self.plugin}' passed: {', '.join(self.passed)}"
        lines = [f"plugin '{self.plugin}' breaks {len(self.problems)} hook contract(s):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """Raised by ``check_plugin`` when a contract is broken; ``.report`` has the details."""

    def __init__(self, report: ConformanceReport):
        super().__init__(str(report))
        self.report = report


def check_plugin(plugin: str | Installed | Any, *, name: str | None = None,
                 options: dict[str, Any] | None = None, partners: list[str] | None = None,
                 raise_on_problems: bool = True, **overrides: Any) -> ConformanceReport:
    """Run the hook contracts of one plugin on a tiny model and batch; call it from your tests.

    ``plugin`` is an installed plugin's name, an ``Installed`` record, or an in-memory plugin
    object (a module or class instance with ``@hookimpl`` functions) together with ``name``.
    ``options`` are the plugin's own options (default: the module's ``CONFORMANCE_OPTIONS``
    dict, if it has one, so slow defaults can be made cheap for the check). ``partners``
    are the plugins it is composed with (default: the installed ``BASELINES``);
    ``overrides`` change ``CHECK_CONFIG`` (e.g. ``attack={"steps": 1}``).

    Checks: hook results have the documented types and shapes; adversarial examples stay
    in [0, 1] and inside each sample's own budget (samples get different ``step.eps``);
    the adversary's output is not altered; targets are labels or distributions; loss terms
    are finite and carry gradients; the state returned by ``advcore_state_dict`` is keyed by
    the plugin's name and JSON/tensors only; the same seed gives the same step; a run
    restored from a checkpoint at an epoch boundary continues exactly like the uninterrupted
    run; and the plugin runs with each partner or is refused by an error naming the partner.

    Raises ``ConformanceError`` listing every problem with the hook that broke its contract
    (or returns the report with ``raise_on_problems=False``).
    """
    target = _target(plugin, name)
    report = _Checker(target, options, partners, overrides).run()
    if raise_on_problems and not report.ok:
        raise ConformanceError(report)
    return report


def _target(plugin: str | Installed | Any, name: str | None) -> Installed:
    if isinstance(plugin, Installed):
        return plugin
    if isinstance(plugin, str):
        found = installed_plugins()
        if plugin not in found:
            raise PluginError(f"unknown plugin '{plugin}'; installed plugins: {', '.join(found) or '(none)'}")
        return found[plugin]
    name = name or getattr(plugin, "NAME", None)
    if not name:
        raise TypeError("check_plugin(obj) needs name=...: the name the plugin would be enabled by")
    return Installed(name=name, package="(in memory)", version="0", module=plugin)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, AdvcoreError) else f"raised {type(exc).__name__}: {text}"


class _Session:
    """One run of the chosen plugins under a fresh probe, epochs of one batch as ``trainer.train`` runs them."""

    def __init__(self, checker: "_Checker", chosen: list[Installed], out: Path | None, check: str):
        self.checker, self.chosen, self.out = checker, chosen, out
        self.probe = Probe()
        self.probe.check = check
        self.run: Run | None = None
        self.failed: BaseException | None = None

    def build(self) -> None:
        names = [p.name for p in self.chosen]
        options = {n: o for n, o in self.checker.options.items() if n in names}
        config = tiny_config(names, options, **self.checker.config)
        probe = Installed(name=PROBE, package="advcore", version="testing", module=self.probe)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)  # as trainer.train does before the first epoch
        self.run, loader = build_run(config, self.out, plugins=[*self.chosen, probe])
        batch = tiny_batch(self.run, self.checker.batch_size)
        with torch.no_grad(), model_mode(self.run.model, "eval"):
            logits = self.run.model(batch.x)
        expected = (self.checker.batch_size, self.run.info.num_classes)
        if logits.shape != expected:
            self.probe.problem(self.run, "advcore_configure_model",
                               f"the configured model returns {tuple(logits.shape)} logits; expected {expected}")

    def epoch(self, epoch: int) -> tuple[list, dict]:
        """Epoch ``epoch`` of one batch (batch number ``epoch`` of the training set); (trace, metrics)."""
        run = self.run
        run.epoch = epoch
        torch.manual_seed(epoch_seed(run.config.seed, epoch))
        run.hooks.on_epoch_start(run, epoch)
        self.probe.trace = []
        size = self.checker.batch_size
        step = train_step(run, tiny_batch(run, size, start=epoch * size), epoch, 0)
        loss = 0.0 if step.loss is None else step.loss.detach().item()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss}
        metrics.update({k: float(v) for k, (v, _) in step.records.items()})
        metrics.update(evaluate_run(run))
        metrics["lr"] = run.optimizer.param_groups[0]["lr"]
        run.hooks.on_epoch_end(run, epoch, metrics)
        return self.probe.trace, metrics

    def state_parts(self) -> dict[str, Any] | None:
        """Each plugin's ``advcore_state_dict`` result, checked; None when one is malformed."""
        parts: dict[str, Any] = {}
        ok = True
        for impl in reversed(self.run.hooks.pm.hook.advcore_state_dict.get_hookimpls()):
            if impl.plugin_name in (PROBE, "advcore.core"):
                continue
            part = impl.function(**{a: self.run for a in impl.argnames})
            problem = _state_problem(impl.plugin_name, part)
            if problem:
                self.probe.problem(self.run, "advcore_state_dict", problem)
                ok = False
            elif part:
                parts.update(snapshot(part))
        return parts if ok else None

    def fail(self, exc: BaseException, refusal: str | None = None) -> None:
        self.failed = exc
        root = exc.__cause__ if exc.__cause__ is not None else exc
        message = _first_line(exc)
        if refusal is not None and isinstance(root, AdvcoreError):
            if refusal in str(root):
                self.checker.report.refused[refusal] = str(root).splitlines()[0]
                return
            message = (f"refused the composition with '{refusal}' without naming it ({_first_line(root)}); "
                       f"name the conflicting plugin in the error")
        named = hook_named_in(str(exc)) if isinstance(exc, PluginError) else None  # the facade names its hook
        hook = named or self.probe.failed_hook or hook_named_in(str(exc)) or "(run)"
        if not any(p.hook == hook for p in self.probe.problems):
            plugins = implementers(self.run, hook) if self.run is not None else ()
            self.probe.problems.append(Problem(self.probe.check, hook, message, plugins))


def _same_trace(session: "_Session", epoch: int, expected: list, advice: str) -> None:
    """Train ``epoch`` in ``session``; a hook whose trace differs from ``expected`` is a problem with ``advice``."""
    trace, _ = session.epoch(epoch)
    diff = first_difference(expected, trace)
    if diff:
        session.probe.problem(session.run, diff[0], f"{diff[1]} {advice}")


def _state_problem(name: str, part: Any) -> str | None:
    shape = f"return {{'{name}': {{'tensors': {{...}}, 'json': {{...}}}}}} or None"
    if part is None or part == {}:
        return None
    if not isinstance(part, dict) or set(part) != {name} or not isinstance(part[name], dict):
        keys = sorted(part) if isinstance(part, dict) else type(part).__name__
        return f"returned {keys}; {shape}"
    inner = part[name]
    if set(inner) - {"tensors", "json"}:
        return f"returned the keys {sorted(inner)} under '{name}'; {shape}"
    tensors = inner.get("tensors") or {}
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        return f"'{name}' tensors must map names to tensors; {shape}"
    try:
        json.dumps(inner.get("json") or {})
    except (TypeError, ValueError) as exc:
        return f"'{name}' json part cannot be written as JSON ({exc}); put tensors under 'tensors'"
    return None


class _Checker:
    def __init__(self, target: Installed, options: dict[str, Any] | None, partners: list[str] | None,
                 overrides: dict[str, Any]):
        self.target = target
        self.report = ConformanceReport(target.name)
        self.partner_names = partners
        self.user_options = options
        self.config = {k: {**v, **overrides.get(k, {})} if isinstance(overrides.get(k, {}), dict) else overrides[k]
                       for k, v in CHECK_CONFIG.items()}
        self.config.update({k: v for k, v in overrides.items() if k not in CHECK_CONFIG})
        self.batch_size = int(self.config["data"]["batch_size"])
        self.options: dict[str, Any] = {}
        self.available: dict[str, Installed] = {}

    def run(self) -> ConformanceReport:
        if not self._load():
            return self.report
        self._home()
        self._compositions()
        return self.report

    def _stage(self, session: _Session) -> None:
        for problem in session.probe.problems:
            self.report.add(problem)
        if not session.probe.problems and session.failed is None:
            self.report.passed.append(session.probe.check)

    def _load(self) -> bool:
        """Import the plugin and check what ``advcore_plugin_info`` declares."""
        target = self.target
        try:
            target.load()
            if target.entry_point is None:
                target.info = _plugin_info(target.module)
        except Exception as exc:  # noqa: BLE001 - any import or info failure is the plugin's
            self.report.add(Problem("registration", hook_named_in(str(exc)) or "advcore_plugin_info", _first_line(exc)))
            return False
        self.available = {**installed_plugins(), target.name: target}
        for p in self.available.values():
            try:
                module = p.load()
            except PluginError:
                continue
            own = self.user_options if p is target and self.user_options is not None else {}
            self.options[p.name] = {**getattr(module, "CONFORMANCE_OPTIONS", {}), **own}
        for message in _options_problems(target.info.options):
            self.report.add(Problem("registration", "advcore_plugin_info", message, (target.name,)))
        return True

    def _home(self) -> None:
        """Contracts over two one-batch epochs, then the same seed again, then a resume."""
        try:
            chosen = resolve([self.target.name, *self.target.info.requires], self.available)
        except PluginError as exc:
            self.report.add(Problem("contracts", "advcore_plugin_info", _first_line(exc), (self.target.name,)))
            return
        with tempfile.TemporaryDirectory(prefix="advcore-check-") as tmp:
            out = Path(tmp) / "run"
            first = _Session(self, chosen, out, "contracts")
            try:
                first.build()
                first.run.hooks.on_run_start(first.run)
                trace0, metrics = first.epoch(0)
                saved = first.state_parts()
                if saved is not None:
                    write_checkpoint(first.run, "last", epoch=1, metrics=metrics)
                trace1, last = first.epoch(1)
                first.run.hooks.on_run_end(first.run, last)
            except Exception as exc:  # noqa: BLE001 - reported with the hook it came from
                first.fail(exc)
            self._stage(first)
            if first.failed is not None:
                return
            self._twin(chosen, trace0)
            if saved is not None:
                self._resumed(chosen, out, saved, trace1)

    def _twin(self, chosen: list[Installed], expected: list) -> None:
        twin = _Session(self, chosen, None, "determinism")
        try:
            twin.build()
            twin.run.hooks.on_run_start(twin.run)
            _same_trace(twin, 0, expected, "between two runs with the same seed; keep state in run.state or "
                        "run.stash (not in module globals) and draw random numbers from torch's seeded generator")
        except Exception as exc:  # noqa: BLE001
            twin.fail(exc)
        self._stage(twin)

    def _resumed(self, chosen: list[Installed], out: Path, saved: dict, expected: list) -> None:
        resumed = _Session(self, chosen, out, "checkpoint round-trip")
        try:
            resumed.build()
            restore_checkpoint(resumed.run, out / "checkpoints" / "last")
            resumed.run.hooks.on_run_start(resumed.run)
            restored = resumed.state_parts() or {}
            for plugin in sorted(saved.keys() | restored.keys()):
                found = difference(saved.get(plugin), restored.get(plugin), "its state")
                if found:
                    resumed.probe.problem(resumed.run, "advcore_load_state_dict",
                                          f"plugin '{plugin}': {found} after a checkpoint round-trip; restore "
                                          f"everything advcore_state_dict returned")
            _same_trace(resumed, 1, expected, "after resuming from a checkpoint; save what this hook depends on "
                        "through advcore_state_dict (or run.state) and restore it in advcore_load_state_dict")
        except Exception as exc:  # noqa: BLE001
            resumed.fail(exc)
        self._stage(resumed)

    def _compositions(self) -> None:
        names = self.partner_names if self.partner_names is not None else list(BASELINES)
        for partner in names:
            if partner == self.target.name or partner in self.target.info.requires:
                continue
            if partner not in self.available:
                if self.partner_names is not None:
                    self.report.add(Problem(f"with {partner}", "(run)", f"partner plugin '{partner}' is not installed"))
                continue
            try:
                chosen = resolve([self.target.name, *self.target.info.requires, partner], self.available)
            except PluginError as exc:
                text = str(exc).splitlines()[0]
                if partner in text and self.target.name in text:
                    self.report.refused[partner] = text
                else:
                    self.report.add(Problem(f"with {partner}", "advcore_plugin_info",
                                            f"refused without naming both plugins: {text}", (self.target.name,)))
                continue
            session = _Session(self, chosen, None, f"with {partner}")
            try:
                session.build()
                session.run.hooks.on_run_start(session.run)
                session.epoch(0)
            except Exception as exc:  # noqa: BLE001
                session.fail(exc, refusal=partner)
                if partner in self.report.refused:
                    continue
            self._stage(session)


def _options_problems(model: Any) -> list[str]:
    if model is None:
        return []
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return [f"options is {model!r}; expected a subclass of advcore.PluginOptions"]
    found = []
    if model.model_config.get("extra") != "forbid":
        found.append(f"options model {model.__name__} accepts unknown keys; subclass advcore.PluginOptions")
    try:
        model()
    except ValidationError as exc:
        found.append(f"options model {model.__name__} needs a default for every field ({format_validation_error(exc)})")
    bare = [n for n, f in model.model_fields.items() if not f.description]
    if bare:
        found.append(f"options {', '.join(bare)} have no description; use Field(default, description=...) "
                     f"(advcore plugins shows it)")
    return found
