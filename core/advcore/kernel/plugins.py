"""Plugin discovery, composition and the one facade that calls hooks.

Plugins are modules registered under the entry-point group ``advcore.plugins`` (one entry
point per plugin; its name is the plugin's name). A run's manager holds the core plugin
and the enabled plugins only, so an installed-but-unused plugin never runs.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import pluggy
from pydantic import BaseModel

from . import hookspecs
from ..errors import AdvcoreError, PluginError

ENTRY_POINT_GROUP = "advcore.plugins"
EXCLUSIVE_ROLES = ("objective", "adversary")
"""Roles every run needs exactly one of; missing ones are filled by an installed default."""

__all__ = ["PluginInfo", "Installed", "installed_plugins", "resolve", "build_manager", "Hooks"]


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin tells the manager about itself (returned by ``advcore_plugin_info``).

    ``roles``: exclusive roles it claims ("objective", "adversary", "head", ...); two enabled
    plugins claiming one role is an error naming both. ``default_for``: roles it fills
    when no enabled plugin claims them. ``options``: a pydantic model (extra="forbid").
    ``requires``: other plugins this one needs enabled alongside it. ``order``: the plugin's
    place in every hook call (see ``canonical_order``).
    ``chance_hint``: the likely cause (and remedy) when a run sits at chance, printed by the trainer's warning.
    """

    summary: str = ""
    """One line for ``advcore plugins``."""
    roles: tuple[str, ...] = ()
    """Exclusive roles it claims: "objective", "adversary", "head" or a name of its own."""
    default_for: tuple[str, ...] = ()
    """Roles it fills when no enabled plugin claims them (pgd-at: objective, pgd: adversary)."""
    options: type[BaseModel] | None = None
    """Its options model (a ``PluginOptions`` subclass); ``run.options[name]`` holds the validated values."""
    requires: tuple[str, ...] = ()
    """Plugins that must be enabled alongside it (a missing one is an error naming the flag to add)."""
    order: int = 0
    """Place in every hook call: lower runs first, equal orders run by plugin name. The command line's
    order never matters, so one combination has one answer."""
    chance_hint: str = ""
    """The likely cause and remedy, named by the trainer's warning when a run sits at chance."""


@dataclass
class Installed:
    """An installed plugin as found through its entry point (``run.plugins`` holds the enabled ones)."""

    name: str
    """The plugin's name: its entry point's name, what ``--plugin`` takes."""
    package: str
    """The distribution that declares it (named in errors)."""
    version: str
    """That distribution's version."""
    entry_point: md.EntryPoint | None = None
    """The entry point it was found through (None for in-memory plugins in tests)."""
    module: ModuleType | Any | None = None
    """The loaded plugin object (a module, or an object with ``@hookimpl`` methods)."""
    error: str | None = None
    """Why it failed to load, if it did."""
    info: PluginInfo = field(default_factory=PluginInfo)
    """What its ``advcore_plugin_info`` returned: roles, defaults, options, order."""

    def load(self) -> Any:
        """Import the plugin; import errors become a PluginError naming its package."""
        if self.module is None and self.error is None:
            try:
                self.module = self.entry_point.load()  # type: ignore[union-attr]
                self.info = _plugin_info(self.module)
            except Exception as exc:  # noqa: BLE001 - report any import failure
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if self.error is not None:
            raise PluginError(
                f"plugin '{self.name}' from package {self.package} {self.version} failed to load: "
                f"{self.error}; fix or uninstall that package"
            )
        return self.module

    @property
    def hooks(self) -> list[str]:
        if self.module is None:
            return []
        return sorted(n for n in dir(self.module) if n.startswith("advcore_")
                      and hasattr(getattr(self.module, n), "advcore_impl"))


class _Torch:
    """``torch``, imported on first attribute use: listing plugins (``advcore plugins``) needs no torch,
    while the facade's checks, which only run in a training process, read ``torch.Tensor`` as usual."""

    def __getattr__(self, name: str):
        import torch as real

        return getattr(real, name)


torch = _Torch()


def _tensor_type() -> type:
    """torch.Tensor, imported on first use: listing plugins (``advcore plugins``) needs no torch."""
    import torch

    return torch.Tensor


def _plugin_info(module: Any) -> PluginInfo:
    fn = getattr(module, "advcore_plugin_info", None)
    info = fn() if fn is not None else PluginInfo()
    if not isinstance(info, PluginInfo):
        raise TypeError(f"advcore_plugin_info returned {type(info).__name__}, expected PluginInfo")
    return info


def installed_plugins() -> dict[str, Installed]:
    """All plugins declared through entry points, by name; blocked ones are left out.

    ``ADVCORE_BLOCK_PLUGINS=a,b`` hides plugins (e.g. a broken third-party one).
    Two distributions declaring one name is an error naming both.
    """
    blocked = {n.strip() for n in os.environ.get("ADVCORE_BLOCK_PLUGINS", "").split(",") if n.strip()}
    found: dict[str, Installed] = {}
    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in blocked:
                continue
            package = dist.metadata["Name"]
            if ep.name in found and found[ep.name].package != package:
                raise PluginError(
                    f"plugin name '{ep.name}' is declared by both {found[ep.name].package} and "
                    f"{package}; uninstall one of them"
                )
            found[ep.name] = Installed(ep.name, package, dist.version, ep)
    return dict(sorted(found.items()))


def canonical_order(plugins: Iterable[Installed]) -> list[Installed]:
    """The plugins in the order their hook implementations run: by ``PluginInfo.order``, then name.

    Every hook of a run calls its implementations in this order (``tryfirst``/``trylast`` on
    one implementation still move it to the front or back), whatever the ``--plugin`` order.
    """
    return sorted(plugins, key=lambda p: (p.info.order, p.name))


def resolve(requested: Iterable[str], available: dict[str, Installed] | None = None) -> list[Installed]:
    """The plugins a run uses, in canonical order: the requested ones plus defaults for unclaimed roles.

    Unknown names fail listing the installed plugins; two plugins claiming one exclusive
    role fail naming both; a role no plugin fills fails naming the installed plugins that could.
    """
    available = installed_plugins() if available is None else available
    chosen: list[Installed] = []
    for name in dict.fromkeys(requested):
        if name not in available:
            raise PluginError(
                f"unknown plugin '{name}'; installed plugins: {', '.join(available) or '(none)'}"
            )
        plugin = available[name]
        plugin.load()
        chosen.append(plugin)
    chosen = canonical_order(chosen)  # errors, too, read the same whatever the --plugin order
    names = {p.name for p in chosen}
    for plugin in chosen:
        missing = [r for r in plugin.info.requires if r not in names]
        if missing:
            raise PluginError(
                f"plugin '{plugin.name}' needs {', '.join(missing)}; add --plugin {' --plugin '.join(missing)}"
            )
    owners = _role_owners(chosen)
    for role in EXCLUSIVE_ROLES:
        if role in owners:
            continue
        defaults = []
        for plugin in available.values():
            try:
                plugin.load()
            except PluginError:
                continue
            if role in plugin.info.default_for:
                defaults.append(plugin)
        if len(defaults) > 1:
            raise PluginError(
                f"plugins '{defaults[0].name}' and '{defaults[1].name}' both declare themselves the "
                f"default {role}; choose one with --plugin"
            )
        if defaults:
            chosen.append(defaults[0])
            owners[role] = defaults[0].name
        else:
            raise PluginError(_unfilled(role, available))
    return canonical_order(chosen)


def _unfilled(role: str, available: dict[str, Installed]) -> str:
    could = [p.name for p in available.values() if p.error is None and role in p.info.roles]
    hint = f"add one of: {', '.join('--plugin ' + n for n in could)}" if could else \
        "no installed plugin claims it; install one that does"
    return f"no plugin fills the {role} role; {hint}"


def _role_owners(plugins: list[Installed]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for plugin in plugins:
        for role in plugin.info.roles:
            if role in owners:
                raise PluginError(
                    f"plugins '{owners[role]}' and '{plugin.name}' both claim the {role} role; "
                    f"use only one of them"
                )
            owners[role] = plugin.name
    return owners


def build_manager(plugins: list[Installed]) -> pluggy.PluginManager:
    """A fresh manager with the hook specs, the core plugin and the given plugins."""
    from . import core_plugin

    pm = pluggy.PluginManager("advcore")
    pm.add_hookspecs(hookspecs)
    pm.register(core_plugin, name="advcore.core")
    # pluggy calls the last registered first: register in reverse so calls run in canonical order
    for plugin in reversed(canonical_order(plugins)):
        module = plugin.load()
        if pm.is_registered(module):
            continue
        pm.register(module, name=plugin.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; check the hook names in that plugin") from None
    _refuse_competing_answers(pm)
    _refuse_unsupported_wrappers(pm)
    return pm


def _refuse_unsupported_wrappers(pm: pluggy.PluginManager) -> None:
    """Wrappers only where the contract allows them (the conformance probe observes everything)."""
    for contract in hookspecs.CONTRACT:
        for impl in getattr(pm.hook, contract.name).get_hookimpls():
            if (impl.wrapper or impl.hookwrapper) and not contract.wrappable and impl.plugin_name != PROBE_NAME:
                allowed = ", ".join(c.name for c in hookspecs.CONTRACT if c.wrappable)
                raise PluginError(f"plugin '{impl.plugin_name}' wraps {contract.name}, which may not be wrapped "
                                  f"(wrappable hooks: {allowed}); use a plain implementation")


PROBE_NAME = "advcore.conformance"


def check_names(run, metrics: Iterable[str] = ()) -> None:
    """The naming rule: plugins' stash entries by plugin name, their state and metrics "<plugin>.<what>"."""
    names = set(run.plugin_names)
    for key in run.stash:
        if key not in names and not key.startswith("advcore."):
            raise PluginError(f"run.stash[{key!r}] is not an enabled plugin's name; a plugin keeps its objects in "
                              f"run.stash[its name] (enabled: {', '.join(sorted(names))})")
    for kind, keys in (("per-sample state", list(run.state)), ("epoch metric", list(metrics))):
        for key in keys:
            if key.partition(".")[0] not in names:
                raise PluginError(f"{kind} {key!r} is not named '<plugin>.<what>' after an enabled plugin "
                                  f"({', '.join(sorted(names))}); rename it, e.g. 'fast-atta.delta'")


def _refuse_competing_answers(pm: pluggy.PluginManager) -> None:
    """Two plugins answering one first-result hook would make one of them silently ignored."""
    for contract in hookspecs.CONTRACT:
        if not (contract.firstresult and contract.exclusive):
            continue
        caller = getattr(pm.hook, contract.name)
        answering = [i.plugin_name for i in caller.get_hookimpls()
                     if not i.wrapper and not i.hookwrapper and i.plugin_name != "advcore.core"]
        if len(answering) > 1:
            raise PluginError(
                f"plugins '{answering[-1]}' and '{answering[-2]}' both answer {contract.name}, where only one answer "
                f"is used; enable only one of them"
            )


class Hooks:
    """Typed calls into the manager; the only code that touches ``pm.hook``.

    Hook results are checked here, so a plugin returning the wrong type is named with
    the hook it broke instead of failing somewhere later.
    """

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._named_state = 0

    def _call(self, name: str, **kwargs: Any) -> Any:
        caller = getattr(self.pm.hook, name)
        if not caller.get_hookimpls():  # pluggy's answer to a hook nobody implements, without its call
            return None if caller.spec.opts.get("firstresult") else []  # (~4 us each, eight a step)
        try:
            return caller(**kwargs)
        except AdvcoreError:  # a plugin's own one-line message for the user: shown as it is
            raise
        except Exception as exc:
            plugin = _failing_plugin(self.pm, name, exc)
            if plugin is None:
                raise
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise PluginError(f"plugin '{plugin} failed in {name}: {type(exc).__name__}: {detail}") from exc

    def configure_model(self, run, model) -> None:
        self._call("advcore_configure_model", run=run, model=model)

    def data_views(self, run) -> int:
        answers = self._call("advcore_data_views", run=run)
        for a in answers:
            check_result("advcore_data_views", a)
        return max(answers, default=1)

    def training_subset(self, config, options: dict, dataset, kind: str, n: int) -> torch.Tensor | None:
        idx = self._call("advcore_training_subset", config=config, options=options, dataset=dataset, kind=kind, n=n)
        if idx is not None and (not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.numel() != n
                                or idx.dtype != torch.int64):
            raise PluginError(f"advcore_training_subset returned {_describe(idx)} for {kind}:{n}; expected {n} "
                              "int64 dataset indices")
        return idx

    def on_run_start(self, run) -> None:
        self._call("advcore_on_run_start", run=run)
        check_names(run)

    def on_run_end(self, run, metrics: dict) -> None:
        self._call("advcore_on_run_end", run=run, metrics=metrics)

    def on_epoch_start(self, run, epoch: int) -> None:
        self._call("advcore_on_epoch_start", run=run, epoch=epoch)

    def on_epoch_end(self, run, epoch: int, metrics: dict) -> None:
        before = set(metrics)
        self._call("advcore_on_epoch_end", run=run, epoch=epoch, metrics=metrics)
        check_names(run, metrics=set(metrics) - before)

    def select_samples(self, run, step) -> None:
        self._call("advcore_select_samples", run=run, step=step)
        _check_vector("advcore_select_samples", step.eps, step.size, "step.eps")
        _check_vector("advcore_select_samples", step.step_size, step.size, "step.step_size")

    def attack_objective(self, run, step):
        return check_result("advcore_attack_objective", self._call("advcore_attack_objective", run=run, step=step))

    def generate_adversarial(self, run, step, objective) -> torch.Tensor:
        adv = self._call("advcore_generate_adversarial", run=run, step=step, objective=objective)
        if adv is None:
            raise PluginError("no plugin generates adversarial examples; add an adversary, e.g. --plugin pgd")
        return check_result("advcore_generate_adversarial", adv, step=step)

    def derive_examples(self, run, step) -> None:
        self._call("advcore_derive_examples", run=run, step=step)

    def adapt_targets(self, run, step) -> None:
        self._call("advcore_adapt_targets", run=run, step=step)

    def loss_terms(self, run, step) -> list:
        terms = []
        for result in self._call("advcore_loss_terms", run=run, step=step):
            if result is not None:
                terms += check_result("advcore_loss_terms", result, step=step)
        return terms

    def adjust_logits(self, step, logits, target) -> torch.Tensor:
        out = self._call("advcore_adjust_logits", run=step.run, step=step, logits=logits, target=target)
        return logits if out is None else check_result("advcore_adjust_logits", out, logits=logits)

    def sample_weights(self, run, step) -> torch.Tensor | dict | None:
        """The product of all plugins' weights: a tensor [B] when every answer applies to every term.

        When some answer is a ``TermWeights`` naming terms, returns {term name: weights or None}
        for the names in ``step.terms`` (None: that term is unweighted).
        """
        from .weights import TermWeights

        weights, targeted = None, []
        for w in self._call("advcore_sample_weights", run=run, step=step):
            if w is None:
                continue
            if isinstance(w, TermWeights):
                _check_vector("advcore_sample_weights", w.values, step.size, "the weights")
                if w.terms is None:
                    w = w.values
                else:
                    targeted.append(w)
                    continue
            _check_vector("advcore_sample_weights", w, step.size, "the weights")
            weights = w if weights is None else weights * w
        if not targeted:
            return weights
        names = list(dict.fromkeys(t.name for t in step.terms))
        per_term = {name: weights for name in names}
        for t in targeted:
            unknown = [n for n in t.terms if n not in per_term]
            if unknown:
                raise PluginError(f"advcore_sample_weights targets loss term(s) {', '.join(unknown)}, but this "
                                  f"step's terms are {', '.join(names) or '(none)'}; name only existing terms")
            for n in t.terms:
                per_term[n] = t.values if per_term[n] is None else per_term[n] * t.values
        return per_term

    def update(self, run, step) -> torch.Tensor:
        return self._call("advcore_update", run=run, step=step)

    def observe_loss(self, run, step) -> None:
        self._call("advcore_observe_loss", run=run, step=step)

    def after_step(self, run, step) -> None:
        self._call("advcore_after_step", run=run, step=step)
        if len(run.state) != self._named_state:  # new per-sample state: check its names once
            check_names(run)
            self._named_state = len(run.state)

    def state_dict(self, run) -> dict:
        merged: dict = {}
        for part in self._call("advcore_state_dict", run=run):
            if part is not None:
                merged.update(check_result("advcore_state_dict", part))
        return merged

    def load_state_dict(self, run, state: dict) -> None:
        self._call("advcore_load_state_dict", run=run, state=state)

    def attack_step_callback(self, run, step):
        """The ``on_step`` callback for ``advcore.attacks.pgd``, or None when no plugin implements
        ``advcore_attack_step`` (then the attack takes its plain path and pays nothing)."""
        if not self.pm.hook.advcore_attack_step.get_hookimpls():
            return None

        def on_step(attack):
            stop = None
            for s in self._call("advcore_attack_step", run=run, step=step, attack=attack):
                if s is None:
                    continue
                check_result("advcore_attack_step", s, step=step)
                stop = s if stop is None else stop | s
            return stop

        return on_step

    def order(self) -> dict[str, list[str]]:
        """Per hook, the plugins that implement it in call order (for ``advcore plan``)."""
        result = {}
        for name in hookspecs.__all__:
            if not name.startswith("advcore_"):
                continue
            impls = getattr(self.pm.hook, name).get_hookimpls()
            result[name] = [i.plugin_name + (" (wrapper)" if i.wrapper else "") for i in reversed(impls)]
        return result


def _expect_terms(value: Any, step) -> str | None:
    from .step import LossTerm

    if not isinstance(value, (list, tuple)):
        return "expected a list of LossTerm"
    for term in value:
        if not isinstance(term, LossTerm) or not isinstance(term.values, torch.Tensor) \
                or term.values.shape != (step.size,):
            return f"a term is {_describe(getattr(term, 'values', term))}; expected LossTerm values shaped ({step.size},)"
    return None


def _expect_objective(value: Any) -> str | None:
    from .step import AttackObjective

    return None if value is None or isinstance(value, AttackObjective) else "expected AttackObjective or None"


def _shaped(value: Any, shape) -> str | None:
    ok = isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(shape)
    return None if ok else f"expected a tensor shaped {tuple(shape)}"


def _stop_mask(value: Any, size: int) -> str | None:
    ok = isinstance(value, torch.Tensor) and value.shape == (size,) and value.dtype == torch.bool
    return None if ok else f"expected a bool tensor shaped ({size},) or None"



def _weights(value: Any, size: int) -> str | None:
    from .weights import TermWeights

    return _shaped(value.values if isinstance(value, TermWeights) else value, (size,))


RESULT_CHECKS: dict[str, Any] = {
    "none": lambda v, c: None if v is None else "expected None",
    "PluginInfo": lambda v, c: None if isinstance(v, PluginInfo) else "expected PluginInfo",
    "int>=1": lambda v, c: None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "expected a positive int",
    "AttackObjective?": lambda v, c: _expect_objective(v),
    "tensor like step.x": lambda v, c: _shaped(v, c["step"].x.shape),
    "list[LossTerm]?": lambda v, c: None if v is None else _expect_terms(v, c["step"]),
    "tensor like logits?": lambda v, c: None if v is None else _shaped(v, c["logits"].shape),
    "indices?": lambda v, c: None if v is None or (torch.is_tensor(v) and v.dim() == 1 and not v.is_floating_point())
    else "expected a 1-d integer tensor of dataset indices or None",
    "stop mask?": lambda v, c: None if v is None else _stop_mask(v, c["step"].size),
    "weights?": lambda v, c: None if v is None else _weights(v, c["step"].size),
    "loss tensor": lambda v, c: None if isinstance(v, torch.Tensor) and v.dim() == 0 else "expected a scalar tensor",
    "state dict?": lambda v, c: None if v is None or isinstance(v, dict) else "expected a dict or None",
}
"""How each result kind of ``hookspecs.CONTRACT`` is checked; tests/test_hook_contract.py keeps them in step."""


def check_result(hook: str, value: Any, **context: Any) -> Any:
    """``value`` if it is what ``hook``'s contract says it returns, else a PluginError naming the hook."""
    kind = hookspecs.CONTRACTS[hook].result
    problem = RESULT_CHECKS[kind](value, context)
    if problem is not None:
        got = _describe(value) + (f" of {value.dtype}" if kind == "stop mask?" and torch.is_tensor(value) else "")
        raise PluginError(f"{hook} returned {got}; {problem}")
    return value


def _check_vector(hook: str, value: Any, size: int, what: str) -> None:
    if not isinstance(value, _tensor_type()) or value.shape != (size,):
        raise PluginError(f"{hook} left {what} as {_describe(value)}; expected a tensor shaped ({size},)")


def _describe(value: Any) -> str:
    if isinstance(value, _tensor_type()):
        return f"a tensor shaped {tuple(value.shape)}"
    return type(value).__name__


def _failing_plugin(pm: pluggy.PluginManager, hook: str, exc: BaseException) -> str | None:
    """Name (and package) of the plugin whose code raised ``exc``; None when the core's own code did.

    The innermost frame that belongs to a plugin (its hook functions or any file of its
    package) or to the core decides, so an error inside the core's update is not blamed on
    a wrapper around it (AWP), and one deep inside a plugin's helper module is its own.
    """
    codes, places = {}, []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        fn = getattr(impl.function, "__func__", impl.function)
        codes[fn.__code__] = impl.plugin_name
        if impl.plugin_name != "advcore.core":
            place = _package_place(impl.plugin)
            if place:
                places.append((place, impl.plugin_name))
    core = os.path.dirname(os.path.abspath(hookspecs.__file__)) + os.sep
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        owner = codes.get(code)
        if owner is None:
            filename = os.path.abspath(code.co_filename)
            owner = next((name for place, name in places if filename.startswith(place)), None)
            if owner is None and filename.startswith(core):
                owner = "advcore.core"
        found = owner or found
        tb = tb.tb_next
    if found is None or found == "advcore.core":
        return None
    for p in installed_plugins().values():
        if p.name == found:
            return f"{found}' (package {p.package} {p.version})"
    return found + "'"


def _package_place(plugin: Any) -> str | None:
    """The folder of a plugin package (or the file of a one-module plugin); None for in-memory objects."""
    filename = getattr(plugin, "__file__", None)
    if not filename:
        return None
    filename = os.path.abspath(filename)
    if os.path.basename(filename) == "__init__.py":
        return os.path.dirname(filename) + os.sep
    return filename
