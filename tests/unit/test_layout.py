"""The layout rules (tools/check_layout.py) and the checker itself."""

from __future__ import annotations

from pathlib import Path

from tools import check_layout


def test_cycles_are_found_however_long() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert check_layout.cycles(graph) == [["a", "b", "c"]]
    assert check_layout.cycles({"a": {"b"}, "b": set()}) == []


def test_type_only_and_function_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.engine import Task\n"
        "def f():\n"
        "    import pkg.store\n"
        "from pkg import trending\n"
    )
    known = {"pkg", "pkg.engine", "pkg.store", "pkg.trending", "pkg.ranking"}
    deps = check_layout.imports_of("pkg.ranking", module, known)
    assert deps == {"pkg", "pkg.engine", "pkg.store", "pkg.trending"}


def test_the_project_has_no_import_cycles() -> None:
    modules = check_layout.project_modules()
    known = set(modules)
    graph = {name: check_layout.imports_of(name, path, known) for name, path in modules.items()}
    assert "processor.engine" in graph and "processor.ranking" in graph
    assert check_layout.cycles(graph) == []
    # The independent audit and the pure ranking stand apart from the engine.
    for name in ("processor.audit", "processor.truth", "processor.ranking"):
        assert "processor.engine" not in _reachable(graph, name), name


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen
