"""Loading the supervision rules: the built-in ones and a province's plug-ins.

A plug-in is a factory ``(settings: SupervisionSettings) -> Rule | Iterable[Rule]``, named
``module:function`` (``--rules``) or registered under the entry-point group
:data:`ledger.supervision.ENTRY_POINT_GROUP` by an installed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any

from ledger.supervision import (
    ENTRY_POINT_GROUP,
    Rule,
    RuleSet,
    SupervisionSettings,
    builtin_rules,
)
from scripts._common import ToolError

__all__ = ["load_rules"]


def _made(value: Any, origin: str) -> list[Rule]:
    made = (
        [value] if isinstance(value, Rule) else list(value) if isinstance(value, Iterable) else []
    )
    if not made or not all(isinstance(rule, Rule) for rule in made):
        raise ToolError(f"the supervision rule factory {origin} made no Rule")
    return [
        rule if rule.origin != "builtin" else Rule(**{**vars(rule), "origin": origin})
        for rule in made
    ]


def _factory(name: str) -> Any:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ToolError(f"--rules {name!r}: name a factory as module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolError(f"--rules {name!r}: cannot import {module_name}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ToolError(f"--rules {name!r}: {module_name} has no function {attribute}")
    return factory


def load_rules(
    settings: SupervisionSettings, plugins: Sequence[str] = (), *, entry_point_rules: bool = True
) -> RuleSet:
    """The built-in rules, then each plug-in's (``--rules``, then the entry points)."""
    rules = builtin_rules(settings)
    for name in plugins:
        rules += _made(_factory(name)(settings), name)
    if entry_point_rules:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            rules += _made(point.load()(settings), f"{point.value} (entry point)")
    try:
        return RuleSet(rules)
    except ValueError as exc:
        raise ToolError(str(exc)) from exc
