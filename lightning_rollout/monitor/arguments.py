"""A front end's keyword arguments → one checked `MonitorSettings`, by field name.

A front end that forwards its arguments here takes every setting the logging step has, new ones included,
without restating them: each name of `MonitorSettings` goes to the settings, each name of `ExplainOptions`
(head fusion, discard ratio, output key, overrides) to its `explain` bundle.
"""

from dataclasses import fields
from typing import Any, List, Mapping

from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.monitor.settings import MonitorSettings


def setting_names() -> List[str]:
    """Every argument `settings_from` takes: the fields of `MonitorSettings` and of `ExplainOptions`."""
    monitor = [f.name for f in fields(MonitorSettings) if f.name != "explain"]
    return monitor + [f.name for f in fields(ExplainOptions)]


def settings_from(arguments: Mapping[str, Any]) -> MonitorSettings:
    """The settings named by `arguments` (the rest at their defaults), checked.

    Raises:
        TypeError: naming an argument that is no setting, with the names there are.
        ValueError: from the checks of `MonitorSettings` and `ExplainOptions`, naming the bad argument.
    """
    explain_names = {f.name for f in fields(ExplainOptions)}
    monitor_names = {f.name for f in fields(MonitorSettings)} - {"explain"}
    unknown = sorted(set(arguments) - explain_names - monitor_names)
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown}; the settings are {sorted(setting_names())}")
    explain = {name: value for name, value in arguments.items() if name in explain_names}
    if explain.get("grid_size") is not None:
        explain["grid_size"] = tuple(explain["grid_size"])
    monitor = {name: value for name, value in arguments.items() if name in monitor_names}
    return MonitorSettings(explain=ExplainOptions(**explain), **monitor)


def setting_value(settings: Any, name: str, owner: object) -> Any:
    """A front end's argument read back by its name from its checked `settings` (`every_n_epochs` and
    `every_n_evaluations` are the settings' `every_n`).

    Raises:
        AttributeError: naming `owner`'s class and `name`, when no setting has that name.
    """
    if settings is not None:
        if name in ("every_n_epochs", "every_n_evaluations"):
            return settings.every_n
        for bundle in (settings, settings.explain):
            if name in bundle.__dataclass_fields__:
                return getattr(bundle, name)
    raise AttributeError(f"{type(owner).__name__!r} object has no attribute {name!r}")
