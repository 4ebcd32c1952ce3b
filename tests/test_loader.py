"""The loader: APP strings to WSGI callables, never with eval."""

from __future__ import annotations

import functools
import importlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve import AppLoadError, load_app
from anyserve.loader import is_cherrypy_root, load_callable

MODULE = """
import os
from os import getcwd

calls = []

def application(environ, start_response):
    return [b"application"]

def app(environ, start_response):
    return [b"app"]

class Holder:
    def inner(environ, start_response):
        return [b"inner"]

    @classmethod
    def create(cls, name):
        def created(environ, start_response):
            return [name.encode()]
        return created

def make(name="default", *, flag=False, extra=None):
    calls.append((name, flag, extra))
    def made(environ, start_response):
        return [f"{name} {flag} {extra}".encode()]
    return made

def broken_factory():
    raise ValueError("factory failed")

number = 3
"""

RAISING = """
import json

def helper():
    raise RuntimeError("broken at import")

helper()
"""


class Modules:
    """Writes importable modules into a directory passed as app_dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        importlib.invalidate_caches()
        return path

    def load(self, spec: Any, **kwargs: Any) -> Any:
        return load_app(spec, app_dir=str(self.root), **kwargs)


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Modules]:
    """A fresh directory for app modules; sys.path and sys.modules restored afterwards."""
    root = tmp_path / "apps"
    root.mkdir()
    path, before = list(sys.path), dict(sys.modules)
    try:
        yield Modules(root)
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - set(before):
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(str(tmp_path)):
                del sys.modules[name]
        sys.modules.update({name: m for name, m in before.items() if sys.modules.get(name) is not m})


@pytest.fixture
def mod(modules: Modules) -> Modules:
    modules.write("loadme.py", MODULE)
    modules.write("onlyapp.py", "def app(environ, start_response):\n    return [b'only']\n")
    modules.write("neither.py", "def helper():\n    pass\nvalue = 1\n")
    modules.write("raising.py", RAISING)
    modules.write("importerror.py", "x = 1\nimport not_a_real_dependency_q\n")
    modules.write("syntaxerror.py", "def broken(:\n")
    modules.write("pkg/__init__.py", "")
    modules.write("pkg/sub.py", "def application(environ, start_response):\n    return [b'sub']\n")
    modules.write("brokenpkg/__init__.py", "import not_a_real_dependency_q\n")
    return modules


def body(app: Any) -> bytes:
    return b"".join(app({}, lambda *a: None))


# -- what loads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("loadme", b"application"),  # the default attribute: application first
        ("onlyapp", b"only"),  # then app
        ("loadme:app", b"app"),
        ("loadme:application", b"application"),
        ("  loadme:app  ", b"app"),
        ("loadme:Holder.inner", b"inner"),  # dotted attribute
        ("loadme:Holder.create('dotted')", b"dotted"),
        ("loadme:make()", b"default False None"),
        ("loadme:make('prod', flag=True)", b"prod True None"),
        ("loadme:make(name='kw', extra=[1, -2.5, None])", b"kw False [1, -2.5, None]"),
        ("loadme:make('x', extra={'a': (1, b'b')})", b"x False {'a': (1, b'b')}"),
        ("pkg.sub", b"sub"),
        ("pkg.sub:application", b"sub"),
    ],
)
def test_app_strings(mod: Modules, spec: str, expected: bytes) -> None:
    assert body(mod.load(spec)) == expected


def test_factory_arguments_are_passed_as_literals(mod: Modules) -> None:
    mod.load("loadme:make('a', flag=True, extra={'k': [1, 2]})")
    assert sys.modules["loadme"].calls == [("a", True, {"k": [1, 2]})]


def test_factory_flag_calls_it_with_no_arguments(mod: Modules) -> None:
    assert body(mod.load("loadme:make", factory=True)) == b"default False None"


def test_factory_flag_with_a_call_calls_it_once(mod: Modules) -> None:
    assert body(mod.load("loadme:make('once')", factory=True)) == b"once False None"
    assert sys.modules["loadme"].calls == [("once", False, None)]


def test_factory_flag_with_a_default_attribute(modules: Modules) -> None:
    modules.write("made.py", "def app():\n    return lambda environ, start_response: [b'made']\n")
    assert body(modules.load("made", factory=True)) == b"made"


def test_a_callable_is_returned_as_is() -> None:
    def wsgi(environ: dict, start_response: object) -> list[bytes]:
        return []

    assert load_app(wsgi) is wsgi


def test_a_factory_object_with_factory_true() -> None:
    def factory() -> Any:
        return lambda environ, start_response: [b"from factory"]

    assert body(load_app(factory, factory=True)) == b"from factory"


def test_app_dir_puts_the_directory_first_on_sys_path(mod: Modules) -> None:
    assert str(mod.root) not in sys.path
    mod.load("loadme")
    assert sys.path[0] == str(mod.root)


def test_a_relative_app_dir_is_taken_from_the_working_directory(mod: Modules, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mod.root.parent)
    assert body(load_app("onlyapp", app_dir="apps")) == b"only"


def test_without_app_dir_the_module_is_not_found(mod: Modules, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mod.root.parent)
    with pytest.raises(AppLoadError, match="could not import module 'onlyapp'"):
        load_app("onlyapp", app_dir=None)


# -- path/to/file.py[:attr] ----------------------------------------------------------------


def test_file_path(modules: Modules) -> None:
    path = modules.write("site/site_file.py", "def app(environ, start_response):\n    return [b'from file']\n")
    assert body(load_app(str(path))) == b"from file"
    assert body(load_app(f"{path}:app")) == b"from file"


def test_relative_file_path(modules: Modules, monkeypatch: pytest.MonkeyPatch) -> None:
    modules.write("site/relative_file.py", "def application(environ, start_response):\n    return [b'rel']\n")
    monkeypatch.chdir(modules.root)
    assert body(load_app("site/relative_file.py")) == b"rel"
    assert body(load_app("site/relative_file.py:application")) == b"rel"


def test_a_file_imports_its_neighbours(modules: Modules) -> None:
    modules.write("site/neighbour_helper.py", "BODY = b'neighbour'\n")
    path = modules.write(
        "site/uses_neighbour.py",
        "from neighbour_helper import BODY\ndef app(environ, start_response):\n    return [BODY]\n",
    )
    assert body(load_app(f"{path}:app")) == b"neighbour"


def test_a_file_named_like_a_loaded_module_does_not_replace_it(modules: Modules) -> None:
    path = modules.write("site/json.py", "def app(environ, start_response):\n    return [b'my json']\n")
    assert body(load_app(f"{path}:app")) == b"my json"
    assert sys.modules["json"] is json
    assert json.dumps([1]) == "[1]"


def test_file_errors(modules: Modules) -> None:
    with pytest.raises(AppLoadError, match=r"could not load APP 'missing_file.py': file missing_file.py does not"):
        load_app("missing_file.py")
    notes = modules.write("site/notes.txt", "not python\n")
    with pytest.raises(AppLoadError, match="is not a Python file"):
        load_app(str(notes))
    raising = modules.write("site/raising_file.py", "raise KeyError('file')\n")
    with pytest.raises(AppLoadError, match=r"raising_file.py' raised KeyError on import") as info:
        load_app(str(raising))
    assert "raising_file.py" in (info.value.details or "")
    assert "raising_file" not in sys.modules


# -- never eval ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("loadme:os.system('touch {marker}')", "must be defined in module 'loadme', not reached through module 'os'"),
        ("loadme:getcwd.__class__('touch {marker}')", "'__class__' cannot be called"),
        ("loadme:make.__call__('{marker}')", "'__call__' cannot be called"),
        ("loadme:__import__('os').system('touch {marker}')", "is not an attribute name or a call"),
        ("loadme:make(open('{marker}', 'w'))", "factory arguments must be literals"),
        ("loadme:make(name)", "factory arguments must be literals"),
        ("loadme:make(1 + 1)", "factory arguments must be literals"),
        ("loadme:make(lambda: 1)", "factory arguments must be literals"),
        ("loadme:make(f'{{number}}')", "factory arguments must be literals"),
        ("loadme:make(*['{marker}'])", "factory arguments must be literals"),
        ("loadme:make(**{{'name': '{marker}'}})", r"\* and \*\* are not allowed"),
        ("loadme:make({{[]: 1}})", "factory arguments must be literals"),
        ("loadme:make()()", "is not an attribute name or a call"),
        ("loadme:make[0]", "is not an attribute name or a call"),
        ("loadme:make; import os", "is not an attribute name or a call"),
    ],
)
def test_nothing_is_evaluated(mod: Modules, tmp_path: Path, spec: str, message: str) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(AppLoadError, match=message):
        mod.load(spec.format(marker=marker))
    assert not marker.exists()
    assert sys.modules["loadme"].calls == []


def test_factory_flag_cannot_reach_into_another_module(mod: Modules) -> None:
    with pytest.raises(AppLoadError, match="not reached through module 'os'"):
        mod.load("loadme:os.getcwd", factory=True)


def test_attributes_of_imported_modules_can_still_be_named_without_a_call(mod: Modules) -> None:
    mod.write("reexport.py", "import pkg.sub as sub\n")
    assert body(mod.load("reexport:sub.application")) == b"sub"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no APP given: name the application as module:attr"),
        ("   ", "no APP given"),
        ("not a module", "bad APP string 'not a module': 'not a module' is not a module name"),
        (":app", "bad APP string ':app': '' is not a module name"),
        ("9lives:app", "is not a module name"),
        ("loadme:make(", "bad APP string 'loadme:make\\(': 'make\\(' is not an attribute name or a call"),
        ("loadme:app:x", "is not an attribute name or a call"),
        ("nosuchmodule_xyz", "could not import module 'nosuchmodule_xyz' of APP 'nosuchmodule_xyz': no module named"),
        ("nosuchmodule_xyz.sub:app", "no module named 'nosuchmodule_xyz'"),
        ("pkg.nosuch:app", "could not import module 'pkg.nosuch'.*no module named 'pkg.nosuch'"),
        ("loadme:nothing", "module 'loadme' has no attribute 'nothing' \\(APP 'loadme:nothing'\\); it has: "),
        ("loadme:Holder.nothing", "module 'loadme.Holder' has no attribute 'nothing'"),
        ("neither", "module 'neither' has no attribute 'application' or 'app'; name the app as neither:NAME"),
        ("loadme:number", "loadme:number is a int object, not a WSGI application"),
        ("loadme:number()", "loadme:number\\(\\) cannot be called: it is a int object, not a factory"),
        ("loadme:broken_factory()", "factory loadme:broken_factory\\(\\) raised ValueError: factory failed"),
        ("raising", "module 'raising' raised RuntimeError on import: broken at import"),
        ("syntaxerror", "module 'syntaxerror' raised SyntaxError on import"),
        ("importerror", "module 'importerror' raised ModuleNotFoundError on import: No module named"),
        ("brokenpkg:app", "module 'brokenpkg' raised ModuleNotFoundError on import"),
    ],
)
def test_errors(mod: Modules, spec: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        mod.load(spec)


def test_the_hint_lists_the_module_s_own_callables(mod: Modules) -> None:
    with pytest.raises(AppLoadError) as info:
        mod.load("loadme:nothing")
    assert "it has: Holder, app, application, broken_factory, make" in str(info.value)
    assert "getcwd" not in str(info.value)  # imported, not the module's own


def test_a_missing_module_says_where_it_looked(mod: Modules, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mod.root)
    with pytest.raises(AppLoadError, match=f"set --app-dir; the working directory is {mod.root}"):
        mod.load("nosuchmodule_xyz:app")
    assert mod.load("loadme") is not None  # the error left nothing broken behind


def test_a_module_that_raises_carries_its_own_traceback(mod: Modules) -> None:
    with pytest.raises(AppLoadError) as info:
        mod.load("raising")
    details = info.value.details
    assert details is not None and details.startswith("Traceback (most recent call last):")
    assert f'{mod.root / "raising.py"}", line 7, in <module>' in details
    assert "in helper" in details
    assert details.rstrip().endswith("RuntimeError: broken at import")
    assert "anyserve/loader.py" not in details and "importlib" not in details


def test_an_import_error_inside_the_module_is_reported_as_a_raise(mod: Modules) -> None:
    """The module exists; what it imports does not. Not 'module not found'."""
    with pytest.raises(AppLoadError) as info:
        mod.load("importerror")
    assert "could not import module" not in str(info.value)
    assert "not_a_real_dependency_q" in str(info.value)
    details = info.value.details or ""
    assert 'importerror.py", line 2' in details
    assert "ModuleNotFoundError: No module named 'not_a_real_dependency_q'" in details


def test_a_factory_that_raises_carries_its_traceback(mod: Modules) -> None:
    with pytest.raises(AppLoadError) as info:
        mod.load("loadme:broken_factory()")
    details = info.value.details or ""
    assert "in broken_factory" in details and "ValueError: factory failed" in details
    assert "anyserve/loader.py" not in details


def test_a_non_callable_object_that_is_not_a_string() -> None:
    with pytest.raises(AppLoadError, match="42 is a int object, not a WSGI application"):
        load_app(42)


# -- CherryPy root objects -----------------------------------------------------------------------

CHERRYPY_ROOT = """
import cherrypy

class Root:
    @cherrypy.expose
    def index(self):
        return "hello from cherrypy"

app = Root()
root = Root()
"""


@pytest.fixture
def cherrypy_tree() -> Iterator[Any]:
    import cherrypy

    before = dict(cherrypy.tree.apps)
    yield cherrypy.tree
    cherrypy.tree.apps.clear()
    cherrypy.tree.apps.update(before)


def call(app: Any, path: str = "/") -> tuple[str, bytes]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path, "wsgi.errors": io.StringIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    result = app(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        return status[0], b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()


@pytest.mark.parametrize("spec", ["cproot:root", "cproot"])
def test_a_cherrypy_root_object_is_mounted_on_the_tree(modules: Modules, cherrypy_tree: Any, spec: str) -> None:
    modules.write("cproot.py", CHERRYPY_ROOT)
    app = modules.load(spec)
    assert app is cherrypy_tree
    assert callable(app) and not callable(sys.modules["cproot"].root)
    assert type(cherrypy_tree.apps[""].root).__name__ == "Root"
    assert call(app) == ("200 OK", b"hello from cherrypy")


def test_a_cherrypy_root_class_is_refused_with_a_hint(modules: Modules, cherrypy_tree: Any) -> None:
    modules.write("cproot.py", CHERRYPY_ROOT)
    with pytest.raises(AppLoadError, match=r"cproot:Root is a CherryPy root class, not an instance .* cproot:Root\(\)"):
        modules.load("cproot:Root")
    assert call(modules.load("cproot:Root()")) == ("200 OK", b"hello from cherrypy")


def test_is_cherrypy_root_decides_without_cherrypy() -> None:
    class Exposed:
        def index(self) -> str:
            return ""

        index.exposed = True  # type: ignore[attr-defined]

    class Dispatching:
        def _cp_dispatch(self, vpath: list[str]) -> Any:
            return None

    class Plain:
        def index(self) -> str:
            return ""

    assert is_cherrypy_root(Exposed()) and is_cherrypy_root(Dispatching())
    assert not is_cherrypy_root(Plain()) and not is_cherrypy_root(Exposed) and not is_cherrypy_root(print)
    with pytest.raises(AppLoadError, match="is a Plain object, not a WSGI application"):
        load_app(Plain())


# -- hooks (--on-start, --on-stop) -----------------------------------------------------------------


def test_load_callable(mod: Modules) -> None:
    mod.load("loadme")
    assert load_callable("loadme:make")().__name__ == "made"
    assert load_callable(print) is print
    with pytest.raises(AppLoadError, match="expected module:function"):
        load_callable("loadme")
    with pytest.raises(AppLoadError, match="name the function without calling it"):
        load_callable("loadme:make()")
    with pytest.raises(AppLoadError, match="not a function"):
        load_callable("loadme:number")


# -- what is not a WSGI application, told at load time ------------------------------------------

NOT_WSGI = """
import functools


async def asgi(scope, receive, send):
    pass


class AsgiApp:
    async def __call__(self, scope, receive, send):
        pass


asgi_instance = AsgiApp()
asgi_partial = functools.partial(asgi, {})


def asgi3(scope, receive, send):  # a sync function returning a coroutine, as some wrappers are
    return asgi(scope, receive, send)


class Asgi2:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def create_app():
    def app(environ, start_response):
        return [b"created"]
    return app


class NeedsAnInstance:
    def __call__(self, environ, start_response):
        return [b"instance"]


def makes_a_factory():
    return create_app


def one_argument(environ):
    return [b"one"]
"""

ASGI_MESSAGE = "{} is an ASGI application; anyserve serves WSGI (wrap it with a2wsgi, or use an ASGI server)"


@pytest.fixture
def not_wsgi(modules: Modules) -> Modules:
    modules.write("notwsgi.py", NOT_WSGI)
    return modules


@pytest.mark.parametrize("attr", ["asgi", "asgi_instance", "asgi_partial", "asgi3", "Asgi2", "AsgiApp()"])
def test_an_asgi_application_is_refused_at_load(not_wsgi: Modules, attr: str) -> None:
    spec = f"notwsgi:{attr}"
    with pytest.raises(AppLoadError) as info:
        not_wsgi.load(spec)
    assert str(info.value) == ASGI_MESSAGE.format(spec)


@pytest.mark.parametrize(
    ("spec", "shown"),
    [("notwsgi:create_app", "notwsgi:create_app"), ("notwsgi:NeedsAnInstance", "notwsgi:NeedsAnInstance")],
)
def test_a_factory_without_factory_is_refused_at_load(not_wsgi: Modules, spec: str, shown: str) -> None:
    with pytest.raises(AppLoadError) as info:
        not_wsgi.load(spec)
    assert str(info.value) == f"{shown} looks like a factory: add --factory or write APP as {shown}()"
    assert body(not_wsgi.load(f"{spec}()")) in (b"created", b"instance")  # as the message says
    assert body(not_wsgi.load(spec, factory=True)) in (b"created", b"instance")


def test_a_default_attribute_that_is_a_factory_is_named_in_full(modules: Modules) -> None:
    modules.write("factorymod.py", "def app():\n    return lambda environ, start_response: [b'made']\n")
    message = r"^factorymod:app looks like a factory: .* write APP as factorymod:app\(\)$"
    with pytest.raises(AppLoadError, match=message):
        modules.load("factorymod")


def test_what_a_factory_returns_must_take_environ_and_start_response(not_wsgi: Modules) -> None:
    with pytest.raises(AppLoadError, match=r"^notwsgi:makes_a_factory\(\) takes no arguments, not what a WSGI"):
        not_wsgi.load("notwsgi:makes_a_factory()")
    with pytest.raises(AppLoadError, match=r"^notwsgi:one_argument takes \(environ\), not what a WSGI application"):
        not_wsgi.load("notwsgi:one_argument")


def test_an_asgi_object_from_python_is_refused_too() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(AppLoadError, match="is an ASGI application; anyserve serves WSGI"):
        load_app(app)


class PepAppClass:
    """PEP 3333's example: the class is the application, each call an instance."""

    def __init__(self, environ: Any, start_response: Any) -> None:
        self.start = start_response

    def __iter__(self) -> Iterator[bytes]:
        self.start("200 OK", [])
        yield b"pep"


class CallableInstance:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return [b"instance"]


def _with_extra(greeting: str, environ: Any, start_response: Any) -> list[bytes]:
    return [greeting.encode()]


def _variadic(*args: Any, **kwargs: Any) -> list[bytes]:
    return [b"variadic"]


def _decorated() -> Any:
    def inner(environ: Any, start_response: Any) -> list[bytes]:
        return [b"decorated"]

    @functools.wraps(_variadic)  # its __wrapped__ says nothing of the wrapper's own signature
    def wrapper(environ: Any, start_response: Any) -> list[bytes]:
        return inner(environ, start_response)

    return wrapper


def _werkzeug_app() -> Any:
    from werkzeug.wrappers import Request, Response

    @Request.application
    def app(request: Any) -> Any:
        return Response("werkzeug")

    return app


def _werkzeug_dispatcher() -> Any:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    return DispatcherMiddleware(CallableInstance(), {})


def _cherrypy_application() -> Any:
    import cherrypy

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "root"

    return cherrypy.Application(Root(), None)


def _cherrypy_tree() -> Any:
    import cherrypy

    return cherrypy._cptree.Tree()


@pytest.mark.parametrize(
    "make",
    [
        lambda: PepAppClass,
        lambda: CallableInstance(),
        lambda: CallableInstance().__call__,
        lambda: functools.partial(_with_extra, "partial"),
        lambda: _variadic,
        _decorated,
        _werkzeug_app,
        _werkzeug_dispatcher,
        _cherrypy_application,
        _cherrypy_tree,
    ],
    ids=[
        "class",
        "instance",
        "bound-method",
        "partial",
        "variadic",
        "decorated",
        "werkzeug",
        "werkzeug-dispatcher",
        "cherrypy-application",
        "cherrypy-tree",
    ],
)
def test_wsgi_callables_of_every_shape_load(make: Any) -> None:
    app = make()
    assert load_app(app) is app
