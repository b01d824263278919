"""The package stands on its own: no module reads a path of the repository, it runs from a copy outside the checkout,
and its imports point one way (models/transforms/data/evaluation at the ground, train above, active/interop above,
configs and cli on top) with no import circle between modules."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "genesis_jax"

# Layer of each room (a sub-package or a top-level module of genesis_jax): a room imports only rooms of its layer
# or below, and the rooms' graph has no cycle. config_loader reaches the configs by name at run time
# (importlib.import_module), never by an import statement.
LAYERS = {
    "models": 0, "transforms": 0, "pretext": 0, "data": 0, "evaluation": 0, "runtime": 0, "visualize": 0, "config_loader": 0, "config_checks": 0, "workdir": 0,
    "train": 1,
    "active": 2, "interop": 2,
    "configs": 3, "cli": 3,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _repository_paths(path: Path, root: Path = REPO) -> list[str]:
    """What in one source file points into the repository rather than into the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Name) and node.id in ("REPO_ROOT", "REPO", "REPOSITORY"):
            found.append(f"{where}: name {node.id}")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            found.append(f"{where}: .parents[...]")
        elif isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "parent":
            found.append(f"{where}: .parent.parent")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                if "--config=configs/" in node.value:
                    found.append(f"{where}: a docstring command uses the old --config=configs/... form")
            elif re.search(r"configs/\w", node.value):
                found.append(f"{where}: string {node.value!r}")
    return found


def test_no_module_reads_a_repository_path():
    found = [hit for path in _modules().values() for hit in _repository_paths(path)]
    assert not found, "modules under genesis_jax/ point into the repository:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""Probe: genesis-jax summary --config=configs/models/unet3d.py."""\nfrom pathlib import Path\n'
                     'REPO_ROOT = Path(__file__).resolve().parents[1]\n'
                     'X = Path(__file__).parent.parent / "configs/data/luna16.py"\n'
                     'Y = Path(__file__).parent / "fine.json"  # next to the module: inside the package\n')
    hits = _repository_paths(probe, root=tmp_path)
    assert [h.split(": ", 1)[1][:12] for h in hits] == [
        "a docstring ", "name REPO_RO", ".parents[...", ".parent.pare", "string 'conf"], hits


_FROM_A_COPY = r"""
import json, os, sys
from pathlib import Path

checkout, copy = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
sys.path[:] = [p for p in sys.path if not Path(p or ".").resolve() == checkout]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "editable" not in getattr(f, "__name__", "").lower()]
allowed = [Path(p).resolve() for p in (sys.prefix, sys.base_prefix, copy)]
opened = []

def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = Path(os.fsdecode(args[0])).resolve()
        if path.is_relative_to(checkout) and not any(path.is_relative_to(a) for a in allowed):
            opened.append(str(path))

sys.addaudithook(audit)
import genesis_jax
from genesis_jax.cli import main
from genesis_jax.config_loader import list_configs, load_config

assert Path(genesis_jax.__file__).resolve().is_relative_to(copy), genesis_jax.__file__
rc = main(["configs"])
names = [name for name, _ in list_configs()]
for name in names:
    load_config(name)
old_form = load_config("configs/finetune/lcs.py:tiny") == load_config("finetune/lcs:tiny")
print("RESULT " + json.dumps(dict(rc=rc, names=names, old_form=old_form, opened=opened)))
"""


def test_runs_from_a_copy_of_the_package_outside_the_checkout(tmp_path):
    """What a wheel holds (the genesis_jax folder) works with the checkout off sys.path, from another directory."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "genesis_jax", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", _FROM_A_COPY, str(REPO), str(site)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    expected = sorted(p.relative_to(PACKAGE / "configs").with_suffix("").as_posix()
                      for p in (PACKAGE / "configs").rglob("*.py") if p.name not in ("__init__.py", "common.py"))
    assert result["rc"] == 0 and result["names"] == expected and result["old_form"]
    for name in expected:
        assert re.search(rf"^{re.escape(name)}\s", proc.stdout, re.MULTILINE), f"`genesis-jax configs` misses {name}"
    assert result["opened"] == [], f"files of the checkout read from the copy: {result['opened']}"


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the genesis_jax modules it imports (anywhere in the file, function bodies included)."""
    edges = defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` depends on the submodule, not on the package's __init__
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            edges[module].update(t for t in targets if t in modules and t != module)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "genesis_jax"


def test_no_import_circle_between_modules():
    assert _cycles(_imports(_modules())) == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_rooms_import_one_way():
    edges = _imports(_modules())
    rooms = {_room(m) for m in _modules()} - {"genesis_jax"}
    assert not rooms - set(LAYERS), f"rooms without a layer in tests/test_package.py LAYERS: {rooms - set(LAYERS)}"
    wrong, room_edges = [], defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            a, b = _room(module), _room(target)
            if a == b or "genesis_jax" in (a, b):
                continue
            room_edges[a].add(b)
            if LAYERS[b] > LAYERS[a]:
                wrong.append(f"{module} (layer {LAYERS[a]}) imports {target} (layer {LAYERS[b]})")
    assert not wrong, "imports pointing up:\n" + "\n".join(sorted(wrong))
    assert _cycles(room_edges) == [], "rooms importing each other in a circle"

