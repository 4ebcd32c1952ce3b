"""The loader: APP strings to WSGI callables, never with eval."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyserve import AppLoadError, load_app
from anyserve.loader import load_callable

MODULE = """
calls = []

def application(environ, start_response):
    return [b"application"]

def app(environ, start_response):
    return [b"app"]

class Holder:
    def inner(environ, start_response):
        return [b"inner"]

def make(name="default", *, flag=False):
    def made(environ, start_response):
        return [f"{name} {flag}".encode()]
    return made

def broken_factory():
    raise ValueError("factory failed")

number = 3
"""


@pytest.fixture
def mod(app_dir: Path) -> str:
    (app_dir / "loadme.py").write_text(MODULE)
    (app_dir / "onlyapp.py").write_text("def app(environ, start_response):\n    return [b'only']\n")
    (app_dir / "importerror.py").write_text("import not_a_real_dependency\n")
    pkg = app_dir / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text("def application(environ, start_response):\n    return [b'sub']\n")
    return "loadme"


def body(app: object) -> bytes:
    return b"".join(app({}, lambda *a: None))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("loadme", b"application"),
        ("loadme:app", b"app"),
        ("onlyapp", b"only"),
        ("loadme:Holder.inner", b"inner"),
        ("loadme:make()", b"default False"),
        ("loadme:make('prod', flag=True)", b"prod True"),
        ("pkg.sub", b"sub"),
        ("pkg.sub:application", b"sub"),
    ],
)
def test_app_strings(mod: str, app_dir: Path, spec: str, expected: bytes) -> None:
    assert body(load_app(spec, app_dir=str(app_dir))) == expected


def test_factory_flag(mod: str, app_dir: Path) -> None:
    assert body(load_app("loadme:make", factory=True, app_dir=str(app_dir))) == b"default False"


def test_file_path(app_dir: Path) -> None:
    (app_dir / "site_file.py").write_text("def app(environ, start_response):\n    return [b'from file']\n")
    assert body(load_app(str(app_dir / "site_file.py"))) == b"from file"
    assert body(load_app(f"{app_dir / 'site_file.py'}:app")) == b"from file"


def test_a_callable_is_returned_as_is() -> None:
    def wsgi(environ: dict, start_response: object) -> list[bytes]:
        return []

    assert load_app(wsgi) is wsgi


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no APP given"),
        ("not a module", "bad APP string"),
        ("loadme:make(", "bad APP string"),
        ("loadme:make(1 + 1)", "factory arguments must be literals"),
        ("loadme:__import__('os').system('true')", "bad APP string"),
        ("loadme:make(*[1])", "factory arguments must be literals|not allowed"),
        ("nosuchmodule_xyz", "could not import module 'nosuchmodule_xyz'"),
        ("loadme:nothing", "module 'loadme' has no attribute 'nothing'"),
        ("loadme:Holder.nothing", "module 'loadme.Holder' has no attribute 'nothing'"),
        ("loadme:number", "is a int object, not a WSGI application"),
        ("loadme:broken_factory()", "factory loadme:broken_factory\\(\\) raised ValueError: factory failed"),
        ("importerror", "module 'importerror' raised ModuleNotFoundError on import"),
        ("missing_file.py", "file missing_file.py does not exist"),
    ],
)
def test_errors(mod: str, app_dir: Path, spec: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        load_app(spec, app_dir=str(app_dir))


def test_an_import_error_inside_the_module_keeps_its_traceback(mod: str, app_dir: Path) -> None:
    with pytest.raises(AppLoadError) as info:
        load_app("importerror", app_dir=str(app_dir))
    assert info.value.details is not None
    assert "not_a_real_dependency" in info.value.details
    assert "importerror.py" in info.value.details


def test_cherrypy_root_object_is_mounted(app_dir: Path) -> None:
    import cherrypy

    (app_dir / "cproot.py").write_text(
        "import cherrypy\nclass Root:\n    @cherrypy.expose\n    def index(self):\n        return 'hi'\nroot = Root()\n"
    )
    app = load_app("cproot:root", app_dir=str(app_dir))
    assert app is cherrypy.tree
    assert "" in cherrypy.tree.apps
    del cherrypy.tree.apps[""]


def test_load_callable(mod: str, app_dir: Path) -> None:
    assert load_callable("loadme:make")().__name__ == "made"
    with pytest.raises(AppLoadError, match="expected module:function"):
        load_callable("loadme")
    with pytest.raises(AppLoadError, match="not a function"):
        load_callable("loadme:number")
