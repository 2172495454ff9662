"""``keyloom providers``: the installed provider plugins, and the ones that fail to load.

For each provider an installed plugin offers: its id and name, the distribution and version
that ships it, the entry point, its default and known scopes, the environment variables of
its credentials and its emulator. Broken plugins are listed with their error, provider ids
that two plugins claim with both claimants and how to pick one; either makes the command
exit with 1. Plugins that ``KEYLOOM_LOAD_PLUGINS`` or ``KEYLOOM_DISABLE_PLUGINS`` switch off
are listed with the switch (they are not imported). ``--json`` prints the same as one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._plugin_switches import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV, autoload_disabled
from .._plugins import PluginRegistry, pick_advice

__all__ = ["add_arguments", "collect", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--json``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _split_label(label: str | None) -> tuple[str | None, str | None]:
    if not label:
        return None, None
    name, _, version = label.rpartition(" ")
    return (name, version) if name else (label, None)


def collect(registry: PluginRegistry) -> dict[str, Any]:
    """The providers and broken plugins of *registry*, as JSON-ready data."""
    providers = []
    for provider_id in sorted(registry.providers):
        registered = registry.providers[provider_id]
        spec, info = registered.spec, registered.plugin
        dist, version = _split_label(info.distribution)
        providers.append(
            {
                "id": spec.id,
                "name": spec.name,
                "distribution": dist,
                "version": version,
                "entry_point": info.entry_point,
                "plugin": info.name,
                "default_scopes": sorted(spec.default_scopes),
                "known_scopes": sorted(spec.known_scopes),
                "env": [f"{spec.env_prefix}_CLIENT_ID", f"{spec.env_prefix}_CLIENT_SECRET"],
                "emulator": spec.emulator,
            }
        )
    broken = []
    for plugin in registry.broken:
        dist, version = _split_label(plugin.distribution)
        broken.append(
            {
                "name": plugin.name,
                "entry_point": plugin.entry_point,
                "distribution": dist,
                "version": version,
                "provider_ids": sorted(plugin.provider_ids),
                "reason": plugin.reason,
                "error": str(plugin.error),
            }
        )
    conflicts = []
    for provider_id, claimants in sorted(registry.conflicts.items()):
        plugins = []
        for claimant in claimants:
            dist, version = _split_label(claimant.plugin.distribution)
            plugins.append(
                {
                    "name": claimant.plugin.name,
                    "entry_point": claimant.plugin.entry_point,
                    "distribution": dist,
                    "version": version,
                }
            )
        conflicts.append(
            {
                "id": provider_id,
                "plugins": plugins,
                "error": str(registry.missing(provider_id)),
                "hint": "Pick one: " + pick_advice(claimants),
            }
        )
    disabled = []
    for off in registry.disabled:
        dist, version = _split_label(off.distribution)
        disabled.append(
            {
                "name": off.name,
                "entry_point": off.entry_point,
                "distribution": dist,
                "version": version,
                "reason": off.reason,
            }
        )
    return {
        "providers": providers,
        "broken": broken,
        "conflicts": conflicts,
        "disabled": disabled,
        "warnings": list(registry.warnings),
    }


def _print_text(data: dict[str, Any]) -> None:
    out = sys.stdout.write
    if not data["providers"]:
        out("No provider plugins are loaded (pip install keyloom-tiktok, for example).\n")
    for p in data["providers"]:
        origin = f"{p['distribution']} {p['version']}" if p["distribution"] else p["plugin"]
        out(f"{p['id']}  {p['name']}  ({origin})\n")
        if p["entry_point"]:
            out(f"  entry point:     {p['entry_point']}\n")
        out(f"  default scopes:  {', '.join(p['default_scopes']) or '(none)'}\n")
        out(f"  known scopes:    {', '.join(p['known_scopes']) or '(not checked)'}\n")
        out(f"  credentials:     {', '.join(p['env'])}\n")
        if p["emulator"]:
            out(f"  emulator:        {p['emulator']}\n")
    _print_problems(data)


def _print_problems(data: dict[str, Any]) -> None:
    out = sys.stdout.write
    if data["broken"]:
        out(f"\nBroken plugins ({len(data['broken'])}):\n")
        for b in data["broken"]:
            out(f"  {b['entry_point']}  ({b['distribution']} {b['version']})\n")
            out(f"    {b['reason']}\n")
        names = ",".join(b["name"] for b in data["broken"])
        out(
            "  Apps that do not use their providers still start; asking for one raises "
            f"PluginError.\n  Fix or uninstall them, or switch them off: "
            f"{DISABLE_PLUGINS_ENV}={names}\n"
        )
    if data["conflicts"]:
        out(f"\nProvider ids claimed twice ({len(data['conflicts'])}):\n")
        for c in data["conflicts"]:
            claimants = " and ".join(
                f"{p['name']} ({p['distribution']} {p['version']})" for p in c["plugins"]
            )
            out(f"  {c['id']}: claimed by {claimants}; neither is used\n")
            out(f"    {c['hint']}\n")
    if data["disabled"]:
        out(f"\nSwitched off ({len(data['disabled'])}, not imported):\n")
        for d in data["disabled"]:
            out(f"  {d['entry_point']}  ({d['distribution']} {d['version']}): {d['reason']}\n")
    for warning in data["warnings"]:
        out(f"\nNote: {warning}.\n")


def run(args: argparse.Namespace) -> int:
    """List the providers; 1 if a plugin is broken or two claim one provider id."""
    registry = PluginRegistry(autoload=True, strict=False)
    data = collect(registry)
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_text(data)
        if autoload_disabled():
            sys.stdout.write(
                f"\nNote: {DISABLE_AUTOLOAD_ENV} is set, so apps load none of these "
                "automatically.\n"
            )
    return 1 if data["broken"] or data["conflicts"] else 0
