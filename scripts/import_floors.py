#!/usr/bin/env python3
"""The import graph of labrunner's rooms: floors, cycles and upward arrows.

A room is a top-level module (``cli.py`` → ``cli``) or package (``config/`` → ``config``) of
labrunner. Every ``import`` and ``from ... import`` counts, at module level and inside functions
(``--runtime``: leave out those under ``if TYPE_CHECKING:``). An arrow A → B means some file of A
imports something of B. Floors: a room that imports no other room is on floor 1; any other room
stands one floor above the highest room it imports, so the number of floors is the longest
downward chain. Rooms on a cycle (Tarjan's strongly connected components) share one floor;
an arrow inside such a cycle is an upward arrow (it does not point to a lower floor).

    python3 scripts/import_floors.py            # the table, cycles, upward arrows
    python3 scripts/import_floors.py --arrows   # and every arrow with the files that make it

Exit status 1 when there is a cycle. docs/architecture.md shows its output.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "labrunner"


def room_of(module: str) -> str | None:
    """``labrunner.config.load`` → ``config``; None for a module outside labrunner."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_modules(path: Path, module: str, *, runtime: bool) -> list[str]:
    """Every module ``path`` imports (for ``from X import y``: X.y when that is a module, else X)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_lines(tree) if runtime else set()
    is_package = path.name == "__init__.py"
    found: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from labrunner import sandbox`: the room is the name imported
            found += [f"{target}.{alias.name}" if target == PACKAGE else target for alias in node.names]
    return found


def graph(src: Path, *, runtime: bool = False) -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]],
                                                       dict[str, int]]:
    """Rooms → the rooms they import; each arrow's files; each room's lines of code."""
    arrows: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], set[str]] = defaultdict(set)
    lines: dict[str, int] = defaultdict(int)
    pkg = src / PACKAGE
    for path in sorted(pkg.rglob("*.py")):
        module = module_name(path, src)
        room = room_of(module)
        assert room is not None
        lines[room] += len(path.read_text(encoding="utf-8").splitlines())
        arrows.setdefault(room, set())
        for target in imported_modules(path, module, runtime=runtime):
            other = room_of(target)
            if other is None or other == room:
                continue
            if other != "__init__" and not ((pkg / other).is_dir() or (pkg / f"{other}.py").is_file()):
                other = "__init__"  # `from labrunner import NAME`: a name of the package itself
            if other == room:
                continue
            arrows[room].add(other)
            why[(room, other)].add(str(path.relative_to(src)))
    return dict(arrows), dict(why), dict(lines)


def components(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (each a list of rooms)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(arrows.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(arrows):
        if v not in index:
            visit(v)
    return out


def floors(arrows: dict[str, set[str]]) -> tuple[dict[str, int], list[list[str]]]:
    """Each room's floor (1 = imports no other room), and the cycles."""
    comps = components(arrows)
    comp_of = {room: i for i, comp in enumerate(comps) for room in comp}
    floor_of_comp: dict[int, int] = {}
    # Tarjan emits a component after every component it reaches: a bottom-up order
    for i, comp in enumerate(comps):
        below = {comp_of[w] for v in comp for w in arrows.get(v, ()) if comp_of[w] != i}
        floor_of_comp[i] = 1 + max((floor_of_comp[j] for j in below), default=0)
    cycles = [comp for comp in comps if len(comp) > 1]
    return {room: floor_of_comp[comp_of[room]] for room in comp_of}, cycles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT, help="the checkout (default: this one)")
    ap.add_argument("--runtime", action="store_true", help="leave out imports under `if TYPE_CHECKING:`")
    ap.add_argument("--arrows", action="store_true", help="also list every arrow and the files making it")
    args = ap.parse_args(argv)
    arrows, why, lines = graph(args.src, runtime=args.runtime)
    floor, cycles = floors(arrows)
    upward = sorted((a, b) for a, targets in arrows.items() for b in targets if floor[b] >= floor[a])
    count = sum(len(t) for t in arrows.values())
    top = max(floor.values())
    print(f"{len(arrows)} rooms on {top} floors, {count} arrows, {len(cycles)} cycles, {len(upward)} upward arrows"
          + (" (imports under TYPE_CHECKING left out)" if args.runtime else ""))
    print()
    print("| floor | room | lines | imports |")
    print("|---|---|---|---|")
    for f in range(top, 0, -1):
        for room in sorted(r for r in floor if floor[r] == f):
            name = f"`{room}/`" if (args.src / PACKAGE / room).is_dir() else f"`{room}.py`"
            below = ", ".join(sorted(arrows[room], key=lambda r: (-floor[r], r))) or "—"
            print(f"| {f} | {name} | {lines[room]:,} | {below} |")
    chain = _longest_chain(arrows, floor)
    print()
    print("longest chain: " + " → ".join(chain))
    for comp in cycles:
        print("cycle: " + " ↔ ".join(comp))
    for a, b in upward:
        print(f"upward arrow: {a} → {b} ({', '.join(sorted(why[(a, b)]))})")
    if args.arrows:
        print()
        for (a, b), files in sorted(why.items()):
            print(f"{a} → {b}: {', '.join(sorted(files))}")
    return 1 if cycles else 0


def _longest_chain(arrows: dict[str, set[str]], floor: dict[str, int]) -> list[str]:
    room = max(floor, key=lambda r: (floor[r], r))
    chain = [room]
    while True:
        lower = [w for w in arrows.get(room, ()) if floor[w] == floor[room] - 1]
        if not lower:
            return chain
        room = sorted(lower)[0]
        chain.append(room)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    sys.exit(main())
