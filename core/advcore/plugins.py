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
from .errors import AdvcoreError, PluginError

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
    ``requires``: other plugins this one needs enabled alongside it.
    """

    summary: str = ""
    roles: tuple[str, ...] = ()
    default_for: tuple[str, ...] = ()
    options: type[BaseModel] | None = None
    requires: tuple[str, ...] = ()


@dataclass
class Installed:
    """An installed plugin as found through its entry point."""

    name: str
    package: str
    version: str
    entry_point: md.EntryPoint | None = None
    module: ModuleType | Any | None = None
    error: str | None = None
    info: PluginInfo = field(default_factory=PluginInfo)

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


def resolve(requested: Iterable[str], available: dict[str, Installed] | None = None) -> list[Installed]:
    """The plugins a run uses: the requested ones plus defaults for unclaimed roles.

    Unknown names fail listing the installed plugins; two plugins claiming one exclusive
    role fail naming both.
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
    return chosen


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
    for plugin in plugins:
        module = plugin.load()
        if pm.is_registered(module):
            continue
        pm.register(module, name=plugin.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; check the hook names in that plugin") from None
    return pm


class Hooks:
    """Typed calls into the manager; the only code that touches ``pm.hook``.

    Hook results are checked here, so a plugin returning the wrong type is named with
    the hook it broke instead of failing somewhere later.
    """

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm

    def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.pm.hook, name)(**kwargs)
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
            if not isinstance(a, int) or a < 1:
                raise PluginError(f"advcore_data_views returned {a!r}; expected a positive int")
        return max(answers, default=1)

    def on_run_start(self, run) -> None:
        self._call("advcore_on_run_start", run=run)

    def on_run_end(self, run, metrics: dict) -> None:
        self._call("advcore_on_run_end", run=run, metrics=metrics)

    def on_epoch_start(self, run, epoch: int) -> None:
        self._call("advcore_on_epoch_start", run=run, epoch=epoch)

    def on_epoch_end(self, run, epoch: int, metrics: dict) -> None:
        self._call("advcore_on_epoch_end", run=run, epoch=epoch, metrics=metrics)

    def select_samples(self, run, step) -> None:
        self._call("advcore_select_samples", run=run, step=step)
        _check_vector("advcore_select_samples", step.eps, step.size, "step.eps")
        _check_vector("advcore_select_samples", step.step_size, step.size, "step.step_size")

    def attack_objective(self, run, step):
        from .step import AttackObjective

        obj = self._call("advcore_attack_objective", run=run, step=step)
        if obj is not None and not isinstance(obj, AttackObjective):
            raise PluginError(f"advcore_attack_objective returned {type(obj).__name__}; expected AttackObjective")
        return obj

    def generate_adversarial(self, run, step, objective) -> torch.Tensor:
        adv = self._call("advcore_generate_adversarial", run=run, step=step, objective=objective)
        if adv is None:
            raise PluginError("no plugin generates adversarial examples; add an adversary, e.g. --plugin pgd")
        if not isinstance(adv, _tensor_type()) or adv.shape != step.x.shape:
            raise PluginError(
                f"advcore_generate_adversarial returned {_describe(adv)}; expected a tensor shaped {tuple(step.x.shape)}"
            )
        return adv

    def derive_examples(self, run, step) -> None:
        self._call("advcore_derive_examples", run=run, step=step)

    def adapt_targets(self, run, step) -> None:
        self._call("advcore_adapt_targets", run=run, step=step)

    def loss_terms(self, run, step) -> list:
        from .step import LossTerm

        terms = []
        for result in self._call("advcore_loss_terms", run=run, step=step):
            if result is None:
                continue
            for term in result:
                if not isinstance(term, LossTerm) or term.values.shape != (step.size,):
                    raise PluginError(
                        f"advcore_loss_terms returned {_describe(getattr(term, 'values', term))}; "
                        f"expected LossTerm values shaped ({step.size},)"
                    )
                terms.append(term)
        return terms

    def adjust_logits(self, step, logits, target) -> torch.Tensor:
        out = self._call("advcore_adjust_logits", run=step.run, step=step, logits=logits, target=target)
        if out is None:
            return logits
        if not isinstance(out, _tensor_type()) or out.shape != logits.shape:
            raise PluginError(f"advcore_adjust_logits returned {_describe(out)}; expected {tuple(logits.shape)}")
        return out

    def sample_weights(self, run, step) -> torch.Tensor | None:
        weights = None
        for w in self._call("advcore_sample_weights", run=run, step=step):
            if w is None:
                continue
            _check_vector("advcore_sample_weights", w, step.size, "the weights")
            weights = w if weights is None else weights * w
        return weights

    def update(self, run, step) -> torch.Tensor:
        return self._call("advcore_update", run=run, step=step)

    def after_step(self, run, step) -> None:
        self._call("advcore_after_step", run=run, step=step)

    def state_dict(self, run) -> dict:
        merged: dict = {}
        for part in self._call("advcore_state_dict", run=run):
            if part is None:
                continue
            if not isinstance(part, dict):
                raise PluginError(f"advcore_state_dict returned {_describe(part)}; expected a dict")
            merged.update(part)
        return merged

    def load_state_dict(self, run, state: dict) -> None:
        self._call("advcore_load_state_dict", run=run, state=state)

    def order(self) -> dict[str, list[str]]:
        """Per hook, the plugins that implement it in call order (for ``advcore plan``)."""
        result = {}
        for name in hookspecs.__all__:
            if not name.startswith("advcore_"):
                continue
            impls = getattr(self.pm.hook, name).get_hookimpls()
            result[name] = [i.plugin_name + (" (wrapper)" if i.wrapper else "") for i in reversed(impls)]
        return result


def _check_vector(hook: str, value: Any, size: int, what: str) -> None:
    if not isinstance(value, _tensor_type()) or value.shape != (size,):
        raise PluginError(f"{hook} left {what} as {_describe(value)}; expected a tensor shaped ({size},)")


def _describe(value: Any) -> str:
    if isinstance(value, _tensor_type()):
        return f"a tensor shaped {tuple(value.shape)}"
    return type(value).__name__


def _failing_plugin(pm: pluggy.PluginManager, hook: str, exc: BaseException) -> str | None:
    """Name (and package) of the plugin whose hook implementation raised ``exc``."""
    codes = {}
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name != "advcore.core":
            fn = getattr(impl.function, "__func__", impl.function)
            codes[fn.__code__] = impl.plugin_name
    found = None
    tb = exc.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    if found is None:
        return None
    for p in installed_plugins().values():
        if p.name == found:
            return f"{found}' (package {p.package} {p.version})"
    return found + "'"
