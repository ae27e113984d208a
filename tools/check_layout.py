"""Check the layout rules a newcomer relies on: no import cycles, small files.

    python tools/check_layout.py          # prints the import graph's cycles, if any

Every `import` counts, including those inside functions and `if TYPE_CHECKING:`
blocks: a type-only cycle still means two modules that cannot be understood apart.
Importing a.b.c also runs a and a.b, so a module depends on its parent packages.
Exit code 1 when a rule is broken.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "mysocial",
    "command_service",
    "query_service",
    "processor",
    "media",
    "client",
    "devtools",
    "bench",
    "tests",
    "tools",
)
GENERATED = ("mysocial/v1/", "mysocial/internal/")
MAX_LINES = 500
# The main loop reads as a table of contents; its helpers live in their own modules.
MAX_LINES_OF = {"processor/engine.py": 260}
LONG_ALLOWED = {"processor/native/src/state.rs"}  # the compiled state machine
SOURCE_SUFFIXES = (".py", ".rs", ".proto", ".java")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(GENERATED):
                out[module_name(path)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports (resolved to modules, not attributes)."""
    is_package = path.name == "__init__.py"
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # The deepest project module named (an attribute import names its module).
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in known:
                    deps.add(candidate)
                    break
    parts = name.split(".")
    for i in range(1, len(parts)):  # parent packages run first
        parent = ".".join(parts[:i])
        if parent in known:
            deps.add(parent)
    deps.discard(name)
    return deps


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def source_files() -> list[Path]:
    """The files git tracks or would track (build output and caches it ignores are
    not the project's code)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(ROOT / name for name in listed.split("\0") if name)


def long_files() -> Iterator[str]:
    for path in source_files():
        if not path.is_file():
            continue  # listed by git but deleted in the working tree
        rel = path.relative_to(ROOT).as_posix()
        if (
            path.suffix not in SOURCE_SUFFIXES
            or rel.startswith((*GENERATED, ".", "node_modules/"))
            or "/." in rel
            or rel in LONG_ALLOWED
        ):
            continue
        lines = len(path.read_text().splitlines())
        limit = MAX_LINES_OF.get(rel, MAX_LINES)
        if lines > limit:
            yield f"{rel}: {lines} lines (at most {limit})"


def main() -> int:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(name, path, known) for name, path in modules.items()}
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    problems += list(long_files())
    for line in problems:
        print(line)
    edges = sum(len(d) for d in graph.values())
    print(f"{len(modules)} modules, {edges} imports: {'OK' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
