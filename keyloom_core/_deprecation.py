"""Old module attributes that keep working, with a warning naming their replacement."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_module_names"]


def deprecated_module_names(
    module: str, names: Mapping[str, tuple[str, object]]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves old names with a :class:`DeprecationWarning`.

    ``__getattr__ = deprecated_module_names(__name__, {"OLD": ("pkg.NEW", NEW)})``: each
    old name maps to the replacement the warning names and the value it still gives.
    Reading ``module.OLD`` warns ``module.OLD is deprecated; use pkg.NEW`` and returns
    ``NEW``; other unknown names raise :class:`AttributeError` as usual. The old names stay
    out of ``dir(module)``, so pluggy does not take an old hook function for a hook.

    :param module: The module's ``__name__``, for the messages.
    :param names: Old name to ``(replacement, value)``.
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's own name
        if name not in table:
            msg = f"module {module!r} has no attribute {name!r}"
            raise AttributeError(msg)
        new, value = table[name]
        warnings.warn(f"{module}.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
