"""The hook contract: which hooks exist, and what a valid implementation of one looks like.

Plugins are checked here before pluggy sees them, so that a misspelled hook or argument
gets one line with a "did you mean" instead of pluggy's raw text.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from . import hookspecs

__all__ = [
    "ASYNC_HOOKS",
    "EITHER_HOOKS",
    "HOOKS",
    "PROVIDER_HOOKS",
    "contract_problems",
    "impl_argnames",
    "impl_problem",
    "one_line",
]

#: Called only on the plugin that owns the provider (then the built-in fallback).
PROVIDER_HOOKS = frozenset(
    {"authorize_params", "exchange_code", "refresh_token", "revoke_token", "fetch_profile"}
)
ASYNC_HOOKS = PROVIDER_HOOKS | {
    "login_succeeded",
    "login_failed",
    "user_created",
    "account_linked",
    "account_unlinked",
    "user_deleted",
}
#: Hooks that may be plain functions too: building an authorization URL needs no I/O, and
#: a plain ``authorize_params`` spares a non-OpenID ``begin_login`` its cancel scope.
EITHER_HOOKS = frozenset({"authorize_params"})
#: Every hook of the contract, for "did you mean" suggestions.
HOOKS = tuple(
    sorted(
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
    )
)


def one_line(text: str) -> str:
    """*text* (pluggy's multi-line messages) on one line."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def contract_problems(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """What is wrong with *plugin*'s hook implementations, before pluggy sees them."""
    problems = []
    for attr in sorted(dir(plugin)):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        hook = opts.get("specname") or attr
        caller = getattr(pm.hook, hook, None)
        spec = getattr(caller, "spec", None)
        if spec is None:
            close = difflib.get_close_matches(hook, HOOKS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"hooks: {', '.join(HOOKS)}"
            problems.append(f"unknown hook '{hook}' ({hint})")
            continue
        function = getattr(plugin, attr)
        problem = impl_problem(hook, opts, function, tuple(spec.argnames))
        if problem is not None:
            problems.append(problem)
    return problems


def impl_argnames(function: Callable[..., Any]) -> tuple[str, ...]:
    """The argument names pluggy passes to *function* (required positional ones, no ``self``)."""
    try:
        target = inspect.unwrap(getattr(function, "__func__", function))
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = tuple(p.name for p in parameters if p.kind in kinds and p.default is p.empty)
    return names[1:] if names[:1] == ("self",) else names


def impl_problem(
    hook: str, opts: Mapping[str, Any], function: Callable[..., Any], allowed: tuple[str, ...]
) -> str | None:
    """Why *function* cannot implement *hook* (whose arguments are *allowed*), or ``None``."""
    if hook in PROVIDER_HOOKS and (opts.get("hookwrapper") or opts.get("wrapper")):
        return f"provider hook '{hook}' cannot be a wrapper (it is called on its owner only)"
    for name in impl_argnames(function):
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            return (
                f"hook '{hook}' has no argument '{name}' ({hint}its arguments are "
                f"{', '.join(allowed)}; an implementation may take any of them)"
            )
    if hook in EITHER_HOOKS:
        return None
    is_async = inspect.iscoroutinefunction(function)
    if hook in ASYNC_HOOKS and not is_async:
        return f"hook '{hook}' is asynchronous: define it with 'async def'"
    if hook not in ASYNC_HOOKS and is_async:
        return f"hook '{hook}' is synchronous: define it with 'def', not 'async def'"
    return None
