"""Load the WSGI application named by an APP string, never with ``eval``.

Accepted forms: ``module``, ``module:attr``, ``module:a.b``, ``module:factory(literal args)``,
``path/to/file.py`` and ``path/to/file.py:attr``. The default attribute is
``application``, then ``app``. A CherryPy root object (an instance with exposed
handlers that is not itself callable) is mounted at ``/`` on ``cherrypy.tree``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from .errors import AppLoadError

DEFAULT_ATTRIBUTES = ("application", "app")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

WSGIApp = Callable[..., Any]


def load_app(spec: Any, *, factory: bool = False, app_dir: str | None = ".", script_name: str | None = "") -> WSGIApp:
    """Return the WSGI callable that *spec* names (or *spec* itself when it is one).

    A CherryPy root object is mounted on ``cherrypy.tree`` at *script_name*; with
    None it becomes an application of its own that follows SCRIPT_NAME."""
    if isinstance(spec, str):
        obj, name, called = _load_from_string(spec.strip(), factory=factory, app_dir=app_dir)
    else:
        name, called = _repr(spec), factory
        obj = _call_factory(spec, name) if factory else spec
    if isinstance(obj, type) and _exposes_handlers(obj):
        raise AppLoadError(f"{name} is a CherryPy root class, not an instance of it; name an instance, e.g. {name}()")
    if callable(obj):
        refuse_non_wsgi(obj, name, called=called)
        return obj
    if is_cherrypy_root(obj):
        return _mount_cherrypy_root(obj, name, script_name)
    raise AppLoadError(
        f"{name} is a {type(obj).__name__} object, not a WSGI application "
        "(a callable taking environ and start_response)"
    )


def _repr(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:  # a cherrypy.Application's repr wants a request
        return f"<{type(obj).__module__}.{type(obj).__qualname__} object>"


def _load_from_string(spec: str, *, factory: bool, app_dir: str | None) -> tuple[Any, str, bool]:
    """The object *spec* names, *spec* as the user would write it for that object
    (with the default attribute spelled out), and whether a factory was called."""
    if not spec:
        raise AppLoadError("no APP given: name the application as module:attr, e.g. myapp:application")
    module_part, _, attr_part = spec.partition(":")
    if app_dir is not None:
        add_app_dir(app_dir)
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _import_file(module_part, spec)
    elif _MODULE_RE.match(module_part):
        module = _import_module(module_part, spec)
    else:
        raise AppLoadError(
            f"bad APP string {spec!r}: {module_part!r} is not a module name; "
            "expected module:attr, module:factory(args) or path/file.py[:attr]"
        )
    called = False
    if not attr_part:
        for default in DEFAULT_ATTRIBUTES:
            if hasattr(module, default):
                obj = getattr(module, default)
                spec = f"{module_part}:{default}"
                break
        else:
            raise AppLoadError(
                f"module {module.__name__!r} has no attribute 'application' or 'app'; "
                f"name the app as {module_part}:NAME{_attributes_hint(module)}"
            )
    else:
        path, args, kwargs = _parse_attribute(attr_part, spec)
        obj = _get_path(module, path, spec, calling=factory or args is not None)
        if args is not None:
            obj = _call_factory(obj, f"{module_part}:{'.'.join(path)}()", *args, **kwargs)
            called = True
    if factory and not called:
        obj = _call_factory(obj, f"{spec}()")
        called = True
    return obj, spec, called


def refuse_non_wsgi(obj: Any, name: str, *, called: bool = False) -> None:
    """Raise AppLoadError for a callable that is surely not a WSGI application: an
    ASGI application, or (unless *called*, the result of a factory) a factory.

    Decided as uvicorn tells ASGI from WSGI: a coroutine function (or an object
    whose ``__call__`` is one), or a signature that takes (scope, receive, send)
    but not (environ, start_response). A callable whose signature cannot be read
    passes, and so does anything that takes two positional arguments."""
    if _is_coroutine_callable(obj):
        raise AppLoadError(_ASGI.format(name=name))
    try:
        signature = inspect.signature(obj, follow_wrapped=False)
    except (TypeError, ValueError):  # a builtin or extension type without a signature
        return
    if _binds(signature, 2):
        return
    if _binds(signature, 3):
        raise AppLoadError(_ASGI.format(name=name))
    if isinstance(obj, type) and _binds(signature, 1):
        # ASGI 2: the class takes the scope, its instance is the coroutine function.
        if inspect.iscoroutinefunction(inspect.getattr_static(obj, "__call__", None)):
            raise AppLoadError(_ASGI.format(name=name))
    if _binds(signature, 0) and not called:
        raise AppLoadError(f"{name} looks like a factory: add --factory or write APP as {name}()")
    raise AppLoadError(f"{name} takes {_shown(signature)}, not what a WSGI application takes (environ, start_response)")


_ASGI = "{name} is an ASGI application; anyserve serves WSGI (wrap it with a2wsgi, or use an ASGI server)"


def _is_coroutine_callable(obj: Any) -> bool:
    if obj is None:
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    if isinstance(obj, type) or inspect.isroutine(obj) or isinstance(obj, functools.partial):
        return False
    return inspect.iscoroutinefunction(inspect.getattr_static(type(obj), "__call__", None))


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _shown(signature: inspect.Signature) -> str:
    text = str(signature.replace(return_annotation=inspect.Signature.empty))
    return "no arguments" if text == "()" else text


def add_app_dir(app_dir: str) -> None:
    """Put *app_dir* first on sys.path, once, so APP (and a -s module:Class) import from it."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)


def _parse_attribute(text: str, spec: str) -> tuple[list[str], list[Any] | None, dict[str, Any]]:
    """'a.b' -> (['a', 'b'], None, {}); 'make(1, x="y")' -> (['make'], [1], {'x': 'y'})."""
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        raise AppLoadError(f"bad APP string {spec!r}: {text!r} is not an attribute name or a call") from None
    args: list[Any] | None = None
    kwargs: dict[str, Any] = {}
    if isinstance(node, ast.Call):
        try:
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except (ValueError, TypeError):  # TypeError: an unhashable key, as in {[]: 1}
            raise AppLoadError(
                f"bad APP string {spec!r}: factory arguments must be literals (strings, numbers, lists, dicts, ...)"
            ) from None
        if any(kw.arg is None for kw in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            raise AppLoadError(f"bad APP string {spec!r}: * and ** are not allowed in factory arguments")
        node = node.func
    path: list[str] = []
    while isinstance(node, ast.Attribute):
        path.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise AppLoadError(f"bad APP string {spec!r}: {text!r} is not an attribute name or a call")
    path.insert(0, node.id)
    return path, args, kwargs


def _import_module(name: str, spec: str, what: str = "APP") -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"could not import module {name!r} of {what} {spec!r}: no module named {exc.name!r} "
                f"(is it on sys.path? set --app-dir; the working directory is {os.getcwd()})"
            ) from None
        raise _raised_on_import(name, exc) from None
    except Exception as exc:
        raise _raised_on_import(name, exc) from None


def _import_file(path: str, spec: str) -> Any:
    filename = os.path.abspath(path)
    if not os.path.isfile(filename):
        raise AppLoadError(f"could not load APP {spec!r}: file {path} does not exist")
    name = os.path.splitext(os.path.basename(filename))[0]
    if not _MODULE_RE.match(name):
        name = "anyserve_app"
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != filename:
        name = f"anyserve_app_{name}"  # a file named json.py must not replace the json module
    module_spec = importlib.util.spec_from_file_location(name, filename)
    if module_spec is None or module_spec.loader is None:
        raise AppLoadError(f"could not load APP {spec!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    directory = os.path.dirname(filename)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the file can import its neighbours
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _raised_on_import(path, exc) from None
    return module


def _raised_on_import(name: str, exc: BaseException) -> AppLoadError:
    return AppLoadError(f"module {name!r} raised {type(exc).__name__} on import: {exc}", details=_user_traceback(exc))


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the frames of anyserve's loader and importlib."""
    summary = traceback.TracebackException.from_exception(exc)
    frames = [
        frame
        for frame in summary.stack
        if frame.filename != __file__
        and not frame.filename.startswith("<frozen importlib")
        and os.sep + "importlib" + os.sep not in frame.filename
    ]
    summary.stack = traceback.StackSummary.from_list(frames)
    return "".join(summary.format())


def _get_path(module: Any, path: list[str], spec: str, what: str = "APP", *, calling: bool = False) -> Any:
    obj = module
    for i, part in enumerate(path):
        # What gets called must be the module's own: not os.system reached through
        # an imported os, not a dunder such as __class__ or __subclasses__.
        if calling and i and isinstance(obj, types.ModuleType):
            raise AppLoadError(
                f"bad APP string {spec!r}: the factory must be defined in module {module.__name__!r}, "
                f"not reached through module {obj.__name__!r}"
            )
        if calling and part.startswith("__"):
            raise AppLoadError(f"bad APP string {spec!r}: {part!r} cannot be called as a factory")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = module.__name__ if i == 0 else ".".join([module.__name__, *path[:i]])
            hint = _attributes_hint(obj) if i == 0 else ""
            raise AppLoadError(f"module {owner!r} has no attribute {part!r} ({what} {spec!r}){hint}") from None
    return obj


def _attributes_hint(module: Any) -> str:
    names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
    names = [n for n in names if getattr(getattr(module, n), "__module__", None) == getattr(module, "__name__", None)]
    return f"; it has: {', '.join(names[:10])}" if names else ""


def _call_factory(obj: Any, shown: str, *args: Any, **kwargs: Any) -> Any:
    if not callable(obj):
        raise AppLoadError(f"{shown} cannot be called: it is a {type(obj).__name__} object, not a factory")
    try:
        return obj(*args, **kwargs)
    except Exception as exc:
        raise AppLoadError(
            f"factory {shown} raised {type(exc).__name__}: {exc}", details=_user_traceback(exc)
        ) from None


def is_cherrypy_root(obj: Any) -> bool:
    """An object CherryPy would serve: exposed itself, with exposed handlers, or a
    ``_cp_dispatch``. Decided without importing CherryPy."""
    if callable(obj) or isinstance(obj, type):
        return False
    if getattr(obj, "exposed", False) or hasattr(obj, "_cp_dispatch"):
        return True
    return _exposes_handlers(type(obj))


def _exposes_handlers(cls: type) -> bool:
    return any(not name.startswith("__") and getattr(getattr(cls, name, None), "exposed", False) for name in dir(cls))


def _mount_cherrypy_root(root: Any, name: str, script_name: str | None = "") -> WSGIApp:
    try:
        import cherrypy
    except ImportError:
        raise AppLoadError(
            f"{name} is a CherryPy root object, but CherryPy is not installed: pip install cherrypy"
        ) from None
    if script_name is None:
        return cherrypy.Application(root, None)
    cherrypy.tree.mount(root, script_name)
    return cherrypy.tree


def load_callable(spec: Any, what: str = "hook") -> Callable[..., Any]:
    """A function named 'module:attr' (or a callable, returned as is), e.g. for --on-start."""
    if callable(spec):
        return spec
    module_part, sep, attr_part = str(spec).partition(":")
    if not sep or not attr_part or not _MODULE_RE.match(module_part):
        raise AppLoadError(f"bad {what} {spec!r}: expected module:function")
    path, args, _ = _parse_attribute(attr_part, str(spec))
    if args is not None:
        raise AppLoadError(f"bad {what} {spec!r}: name the function without calling it")
    obj = _get_path(_import_module(module_part, str(spec), what), path, str(spec), what)
    if not callable(obj):
        raise AppLoadError(f"{what} {spec!r} is a {type(obj).__name__} object, not a function")
    return obj


class DeferredApp:
    """An app imported later, in the process that serves it: a pre-fork server's
    worker calls :meth:`load` after the fork, so that importing the app (and
    anything it starts) happens in each worker rather than in the parent."""

    def __init__(self, load: Callable[[], WSGIApp], name: str) -> None:
        self._load = load
        self._app: WSGIApp | None = None
        self.name = name

    def load(self) -> WSGIApp:
        if self._app is None:
            self._app = self._load()
        return self._app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.load()(environ, start_response)

    def __repr__(self) -> str:
        return f"<DeferredApp {self.name}>"
