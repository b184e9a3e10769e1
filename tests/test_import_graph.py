"""The project's modules import each other without cycles: every import counts, also one inside a function (a
cycle hidden in a function is still two modules that cannot be read or changed apart)."""
import ast
import os
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("emb_opt", "hashing", "semantic_id", "cuda_ext", "experiments")


def project_modules() -> Dict[str, str]:
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    modules[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return modules


def imports_of(path: str, module: str, known: Set[str]) -> Set[str]:
    """Project modules that ``module`` imports (``from package import name`` counts as the submodule when one
    exists); a package's ``__init__`` re-exporting its submodules is not an import of the package by them."""
    with open(path) as f:
        tree = ast.parse(f.read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_import_cycles():
    modules = project_modules()
    known = set(modules)
    graph = {m: imports_of(p, m, known) for m, p in modules.items()}
    # a package's __init__ imports its submodules; a submodule importing a sibling through the package is the
    # sibling's import, not the package's: drop edges into packages from their own submodules
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not m.startswith(t + ".")}
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
