"""Optional dependencies (pyproject extras), imported on first use with an error that names the extra.

Ray and the Kubernetes client are heavy and only some commands need them (``--ray``, ``up --backend ray``,
the Kubernetes discovery and actuator), so the core never imports them at module level. ``import_extra``
is the one place that turns a missing package into a ``MissingExtraError`` telling the user what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from polyserve.core.errors import ConfigError


class MissingExtraError(ConfigError):
    """A feature needs an optional dependency that is not installed; the message names the pip extra."""


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """``import module`` or raise ``MissingExtraError``: "FEATURE needs the EXTRA extra: pip install
    'polyserve[EXTRA]'". Only a missing top-level package becomes that error; an import error *inside* an
    installed package (a broken install) propagates as it is, since installing the extra would not fix it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtraError(
            f"{feature} needs the {extra} extra: pip install 'polyserve[{extra}]' (no module named {module!r})"
        ) from None
