"""The shape of the code: no import cycles, and one walk from the options to the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from anyserve.adapters.cheroot import CherootAdapter
from anyserve.config import Config

ROOT = Path(__file__).resolve().parents[1]
#: Where each importable package of the distribution lives in the checkout.
PACKAGES = {"anyserve": ROOT / "anyserve", "anyserve.adapters": ROOT / "adapters"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if name.startswith("anyserve.adapters") and package == "anyserve":
                continue
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the distribution that *name* imports, at any depth of its code
    (those under ``if TYPE_CHECKING:``, for annotations, are not run and not counted)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = []  # annotations only: never run, so never a cycle
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def test_no_import_cycles() -> None:
    """Imports inside functions count too: a cycle deferred is still a cycle."""
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    assert "anyserve.plan" in graph and "anyserve.adapters.eventloop" in graph
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            # A package's own __init__ importing its submodules is not a cycle of
            # theirs: a module's parent package is imported before it anyway.
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_core_imports_no_server() -> None:
    known = modules()
    servers = {name for name in known if name.startswith("anyserve.adapters.") and name.count(".") == 2}
    shared = {f"anyserve.adapters.{name}" for name in ("base", "draining", "eventloop", "threaded", "patching")}
    for name, path in known.items():
        if name.startswith("anyserve.adapters"):
            continue
        assert not imports(name, path, servers - shared), f"{name} imports a server's adapter"


def test_one_start_chooses_and_checks_the_server_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`anyserve -s cheroot APP`, up to the server's serve(): the server is chosen
    once, its refusals and -o options looked at once, the listeners bound once."""
    from anyserve import entry, plan, registry

    calls: dict[str, int] = {}

    def counting(owner: object, attribute: str, key: str) -> None:
        original = getattr(owner, attribute)

        def counted(*args: object, **kwargs: object) -> object:
            calls[key] = calls.get(key, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, counted)

    counting(plan, "choose_adapter", "choose_adapter")
    counting(registry, "get_adapter", "get_adapter")
    counting(plan, "bind_listeners", "bind_listeners")
    for method in ("refuse", "refuse_listeners", "parse_options"):
        counting(CherootAdapter, method, method)
    served: list[object] = []
    monkeypatch.setattr(CherootAdapter, "serve", lambda self, app, listeners, lifecycle: served.append(app))
    config = Config.load(cli={"server": "cheroot", "bind": ["127.0.0.1:0"], "app": "tests.apps.app:app"}, env={})
    assert entry.serve_in_process(config) is False
    assert served and callable(served[0])
    assert calls == {
        "choose_adapter": 1,
        "get_adapter": 1,
        "bind_listeners": 1,
        "refuse": 1,
        "refuse_listeners": 1,
        "parse_options": 1,
    }
