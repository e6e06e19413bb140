"""Condensation methods: one module per method, registered by name.

A method is a function ``condense(ctx: Context) -> CondensedSet`` decorated with
``@register_method("<name>")`` in ``vdc/condense/<name>.py``. The condense stage imports
``vdc.condense.<name>`` on demand (or the module named by the method's ``module:`` setting, for a
method that lives outside vdc), so adding a method is adding one file and naming it in config.
See ``vdc/condense/base.py`` for the Context a method receives.
"""
from __future__ import annotations

import importlib
from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register_method(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def get_method(name: str, module: str | None = None) -> Callable:
    if name not in _REGISTRY:
        modname = module or f"vdc.condense.{name}"
        try:
            importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            raise KeyError(f"condensation method '{name}': no module {modname}; add vdc/condense/{name}.py "
                           f"or set methods.{name}.module in the config") from None
    if name not in _REGISTRY:
        raise KeyError(f"module for method '{name}' did not register it (use @register_method('{name}'))")
    return _REGISTRY[name]
