"""The layers of `src` import each other in one direction only (no cycles), as the README's Layout says."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def imports_between_parts() -> dict[str, set[str]]:
    """part -> the other parts of src it imports; a part is a package (data, models, ...) or a top module (run)."""
    edges: dict[str, set[str]] = {}
    for file in SRC.rglob("*.py"):
        parts = file.relative_to(SRC.parent).with_suffix("").parts
        me = parts[1]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                q = name.split(".")
                if q[0] == "src" and len(q) > 1 and q[1] != me:
                    edges.setdefault(me, set()).add(q[1])
    return edges


def reachable(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles():
    edges = imports_between_parts()
    cycles = sorted(a for a in edges if a in reachable(edges, a))
    assert not cycles, f"parts of src that import themselves through others: {cycles} ({edges})"


def test_layers_point_down():
    edges = imports_between_parts()
    assert not edges.get("errors"), "src/errors.py is the bottom layer: it imports nothing of the project"
    assert reachable(edges, "data") <= {"errors"}, "data imports neither models, losses nor the run wiring"
    assert reachable(edges, "models") <= {"errors", "metrics"}, "models never import data or losses"
    assert reachable(edges, "losses") <= {"errors"}
    assert reachable(edges, "metrics") == set(), "metrics imports neither data nor models"
    assert "run" not in {p for part in ("data", "models", "losses", "metrics", "utils") for p in reachable(edges, part)}
