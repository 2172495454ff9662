"""Where a profiled run spent its time: self time by package and by function (pyinstrument)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from _common import table

#: Path fragments that name a package, most specific first.
_PACKAGES = (
    ("keyloom_core/", "keyloom_core"),
    ("keyloom_tiktok/", "keyloom_tiktok"),
    ("benchmarks/", "benchmark harness"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "yarl"),
    ("multidict/", "multidict"),
    ("anyio/", "anyio"),
    ("pluggy/", "pluggy"),
    ("attr/", "attrs"),
    ("attrs/", "attrs"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("h11/", "h11"),
    ("authlib/", "authlib"),
    ("asyncio/", "asyncio"),
    ("selectors", "selector wait (idle)"),
    ("json/", "json"),
    ("urllib/", "urllib"),
    ("logging/", "logging"),
)


def _package(frame: Any) -> str:
    path = (frame.file_path or "").replace("\\", "/")
    if not path or path.startswith("<"):
        function = frame.function or ""
        if "select" in function or "poll" in function:
            return "selector wait (idle)"
        return "builtins"
    for fragment, name in _PACKAGES:
        if fragment in path:
            return name
    return "other stdlib" if "/lib/python3" in path else "other"


def _walk(frame: Any) -> Iterator[Any]:
    stack = [frame]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _label(frame: Any) -> str:
    short = (frame.file_path_short or frame.file_path or "?").replace("\\", "/")
    return f"{frame.function} ({short}:{frame.line_no})"


def summarise(session: Any, *, top: int = 15, logins: int | None = None) -> str:
    """Self time by package and the heaviest functions (self and inclusive) of *session*."""
    root = session.root_frame()
    if root is None:
        return "(no samples)"
    total = root.time or 1e-12
    by_package: dict[str, float] = defaultdict(float)
    by_function: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    for frame in _walk(root):
        if frame.is_synthetic:  # its time is already in its parent's self time
            continue
        by_package[_package(frame)] += _own_time(frame)
        by_function[_label(frame)] += _own_time(frame)
    # Inclusive time of the keyloom functions, counted once per call stack.
    _inclusive(root, inclusive, set())
    scale = 1e6 / logins if logins else None

    def fmt(seconds: float) -> list[str]:
        cells = [f"{seconds * 1e3:.1f}", f"{100 * seconds / total:.1f}%"]
        if scale:
            cells.append(f"{seconds * scale:.0f}")
        return cells

    extra = ["µs/login"] if scale else []
    packages = sorted(by_package.items(), key=lambda kv: -kv[1])
    out = [
        f"profiled {total:.3f} s wall, {session.cpu_time:.3f} s CPU"
        + (f", {logins} logins" if logins else ""),
        "",
        "self time by package:",
        table(["package", "ms", "share", *extra], [[k, *fmt(v)] for k, v in packages if v > 0]),
        "",
        f"top {top} functions by self time:",
        table(
            ["function", "ms", "share", *extra],
            [[k, *fmt(v)] for k, v in sorted(by_function.items(), key=lambda kv: -kv[1])[:top]],
        ),
        "",
        "keyloom functions by inclusive time:",
        table(
            ["function", "ms", "share", *extra],
            [[k, *fmt(v)] for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]],
        ),
    ]
    return "\n".join(out)


def _own_time(frame: Any) -> float:
    return max(frame.total_self_time, 0.0)


def _inclusive(frame: Any, out: dict[str, float], active: set[str]) -> None:
    path = (frame.file_path or "").replace("\\", "/")
    label = None
    if ("keyloom_core/" in path or "keyloom_tiktok/" in path) and frame.function:
        label = _label(frame)
    counted = label is not None and label not in active
    if counted:
        out[label] += frame.time
        active.add(label)
    for child in frame.children:
        _inclusive(child, out, active)
    if counted:
        active.discard(label)
