"""The environment switches that choose which plugin entry points load.

In the style of pytest and llm; names are entry-point or distribution names, as
``keyloom providers`` shows them, compared case-insensitively with ``-``, ``_`` and ``.``
alike:

- ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD=1``: none (explicit plugins still register);
- ``KEYLOOM_LOAD_PLUGINS=a,b``: only these (set but empty: none);
- ``KEYLOOM_DISABLE_PLUGINS=a,b``: all but these.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

import attrs

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "DISABLE_PLUGINS_ENV",
    "LOAD_PLUGINS_ENV",
    "PluginSwitches",
    "autoload_disabled",
    "normalise_name",
]

DISABLE_AUTOLOAD_ENV = "KEYLOOM_DISABLE_PLUGIN_AUTOLOAD"
LOAD_PLUGINS_ENV = "KEYLOOM_LOAD_PLUGINS"
DISABLE_PLUGINS_ENV = "KEYLOOM_DISABLE_PLUGINS"


def normalise_name(name: str) -> str:
    """*name* as the switches compare it (lower case; runs of ``-``, ``_``, ``.`` as ``-``)."""
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def _env_names(name: str) -> tuple[str, ...] | None:
    """The names listed in the switch *name*, or ``None`` when it is not set."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    return tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


def autoload_disabled() -> bool:
    """Whether ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point loading off."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@attrs.frozen
class PluginSwitches:
    """``KEYLOOM_LOAD_PLUGINS`` and ``KEYLOOM_DISABLE_PLUGINS``, as read from the environment.

    Attributes:
        load: The allow-list, or ``None`` when the switch is not set.
        disable: The names never to load.
    """

    load: tuple[str, ...] | None = None
    disable: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> PluginSwitches:
        """Read both switches from ``os.environ``."""
        return cls(load=_env_names(LOAD_PLUGINS_ENV), disable=_env_names(DISABLE_PLUGINS_ENV) or ())

    def refusal(self, names: Iterable[str]) -> str | None:
        """Why a plugin known by *names* (entry-point and distribution name) is not loaded."""
        keys = {normalise_name(n) for n in names}
        if keys & {normalise_name(n) for n in self.disable}:
            return f"{DISABLE_PLUGINS_ENV}={','.join(self.disable)}"
        if self.load == ():
            return f"{LOAD_PLUGINS_ENV} is set but empty"
        if self.load is not None and not keys & {normalise_name(n) for n in self.load}:
            return f"not in {LOAD_PLUGINS_ENV}={','.join(self.load)}"
        return None

    def unmatched(self, known: Iterable[str]) -> list[str]:
        """A warning for each listed name that no installed entry point answers to."""
        keys = sorted({normalise_name(n) for n in known})
        warnings = []
        listed = [(LOAD_PLUGINS_ENV, n) for n in self.load or ()]
        for env, name in [*listed, *((DISABLE_PLUGINS_ENV, n) for n in self.disable)]:
            if normalise_name(name) not in keys:
                close = difflib.get_close_matches(normalise_name(name), keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                warnings.append(f"{env} names '{name}', which no installed plugin is{hint}")
        return warnings
