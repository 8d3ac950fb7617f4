#!/usr/bin/env python3
"""Prints each workspace crate's module graph and fails on an import cycle.

A module depends on another when its code (not its comments, not its
`#[cfg(test)]` module) names it: `use crate::a::b`, `crate::a::b::f()`,
`super::x`. Paths resolve to the longest module they start with, so
`crate::storage::Storage` is an edge to `storage`. The crate root (`lib`)
wires its modules together; an edge back to it counts like any other.

    scripts/module-graph.py            # the graph of every crate, then the cycles
    scripts/module-graph.py --quiet    # only the cycles (the test gate runs this)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["proto", "rpc", "process", "node", "router", "cli", "bench", "peers", "tests"]
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}")


def module_of(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def code_lines(text: str):
    """The file's lines up to its test module, without comments."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and lines[i + 1].strip().startswith("mod "):
            break
        stripped = line.split("//")[0]
        if stripped.strip():
            yield stripped


def resolve(module: tuple, is_dir_module: bool, head: str, path: list, modules: set) -> tuple:
    if head == "crate":
        base = ()
    else:
        # `super` of a.rs (module a) and of a/mod.rs (module a) is a's parent.
        base = module[:-1]
        while path and path[0] == "super":
            base, path = base[:-1], path[1:]
    target = base
    for part in path:
        if base + (part,) in modules or target + (part,) in modules:
            target = target + (part,)
        else:
            break
    return target


def graph(crate: str):
    src = ROOT / crate / "src"
    files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts]
    modules = {module_of(src, f) for f in files}
    edges = {m: set() for m in modules}
    for f in files:
        module = module_of(src, f)
        is_dir = f.name == "mod.rs"
        text = "\n".join(code_lines(f.read_text()))
        refs = []
        for head, prefix, group in GROUP.findall(text):
            for item in group.split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    refs.append((head, prefix + "::" + item.split("::")[0]))
                elif item == "self":
                    refs.append((head, prefix))
        refs += PATH.findall(GROUP.sub("", text))
        for head, path in refs:
            target = resolve(module, is_dir, head, [p for p in path.split("::") if p], modules)
            if target != module:
                edges[module].add(target)
    return edges


def name(module: tuple) -> str:
    return "::".join(module) or "lib"


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    quiet = "--quiet" in sys.argv
    failed = False
    for crate in CRATES:
        edges = graph(crate)
        if not quiet:
            print(f"{crate}:")
            for module in sorted(edges):
                print(f"  {name(module)} -> {', '.join(sorted(name(t) for t in edges[module])) or '-'}")
        for component in cycles(edges):
            failed = True
            print(f"import cycle in {crate}: {' <-> '.join(name(m) for m in component)}")
    if not failed:
        print("no import cycle in any crate")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
