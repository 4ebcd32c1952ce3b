"""--reload: a changed file restarts the server on the same listener."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from anyserve.errors import EXIT_USAGE
from anyserve.reloader import ChangeFilter

from .harness import Running, run_anyserve

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_a_changed_module_is_served_after_a_restart(tmp_path: Path) -> None:
    module = tmp_path / "reloadable.py"
    module.write_text(APP.format(version="one"))
    running = Running("wsgiref", ["--reload", "-b", "127.0.0.1:0", "--app-dir", str(tmp_path), "reloadable:app"])
    try:
        running.wait_listening()
        assert get(running.url) == b"one"
        module.write_text(APP.format(version="two"))
        later = time.time() + 2
        os.utime(module, (later, later))  # a new mtime even on a coarse clock
        deadline = time.monotonic() + 20
        while get(running.url) != b"two":  # the parent keeps the port open across restarts
            assert time.monotonic() < deadline, running.stderr_text()
            time.sleep(0.05)
        assert "Detected a change in" in running.stderr_text()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()


# -- what is watched ---------------------------------------------------------------------------------

TEMPLATE_APP = """
from pathlib import Path

PAGE = (Path(__file__).resolve().parents[1] / "templates" / "index.html").read_bytes()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html")])
    return [PAGE]
"""


def restarts(running: Running, count: int) -> str:
    """Wait until the server has listened *count* times (the first start included); return stderr."""
    return running.wait_for_output("(?s)" + ".*".join(["Listening on"] * count))


def changes_detected(stderr: str) -> list[str]:
    return [line.split("Detected a change in ", 1)[1] for line in stderr.splitlines() if "Detected a change in" in line]


def test_a_reload_dir_with_an_included_glob_restarts_on_a_template(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "pages.py").write_text(TEMPLATE_APP)
    (tmp_path / "templates").mkdir()
    page = tmp_path / "templates" / "index.html"
    page.write_text("<p>one</p>")
    args = ["--reload", "--reload-dir", "templates", "--reload-include", "*.html", "--app-dir", "site"]
    running = Running("wsgiref", [*args, "-b", "127.0.0.1:0", "pages:app"], cwd=tmp_path)
    try:
        running.wait_listening()
        assert get(running.url) == b"<p>one</p>"
        page.write_text("<p>two</p>")
        restarts(running, 2)
        assert get(running.url) == b"<p>two</p>"
        assert changes_detected(running.stderr_text()) == [f"{page.resolve()}, reloading"]
        assert running.stop() == 0
    finally:
        running.stop()


def test_new_files_deleted_files_and_the_exclude_patterns(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(APP.format(version="plain"))
    (tmp_path / "helper.py").write_text("")
    (tmp_path / "cache").mkdir()
    (tmp_path / ".hidden").mkdir()
    args = ["--reload", "--reload-include", "*.txt", "--reload-exclude", "cache", "--reload-exclude", "draft-*"]
    running = Running("wsgiref", [*args, "-b", "127.0.0.1:0", "--app-dir", str(tmp_path), "plain:app"])
    try:
        running.wait_listening()
        # Left alone: a file in an excluded directory, an excluded name, a hidden directory, an
        # editor's swap file. Each batch of changes that restarts names only the files that count,
        # so the changes that do not count must never appear in a "Detected" line.
        (tmp_path / "cache" / "entry.txt").write_text("x")
        (tmp_path / "cache" / "module.py").write_text("")
        (tmp_path / "draft-notes.txt").write_text("x")
        (tmp_path / ".hidden" / "module.py").write_text("")
        (tmp_path / ".plain.py.swp").write_text("x")
        (tmp_path / "notes.txt").write_text("new")  # a new file that is included
        restarts(running, 2)
        (tmp_path / "helper.py").unlink()  # a deleted module
        restarts(running, 3)
        assert changes_detected(running.stderr_text()) == [
            f"{(tmp_path / 'notes.txt').resolve()}, reloading",
            f"{(tmp_path / 'helper.py').resolve()}, reloading",
        ]
        assert get(running.url) == b"plain"
    finally:
        running.stop()


def test_a_missing_reload_dir_is_one_line(tmp_path: Path) -> None:
    result = run_anyserve("--reload", "--reload-dir", "nowhere", "tests.apps.app:app", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        EXIT_USAGE,
        "anyserve: error: --reload-dir nowhere: no such directory\n",
    )


# -- the rules of the patterns ----------------------------------------------------------------------


def test_the_default_patterns_are_uvicorns() -> None:
    root = Path("/srv/site")
    changes = ChangeFilter([root])
    assert changes.includes == ["*.py"] and changes.excludes == [".*", ".py[cod]", ".sw.*", "~*"]
    assert changes.matches(root / "app.py") and changes.matches(root / "pkg" / "views.py")
    for ignored in ("index.html", "app.pyc", ".venv/lib/site.py", "pkg/.git/hook.py", "~backup.py"):
        assert not changes.matches(root / ignored), ignored
    # Directories above the watched one do not count: a project under a hidden directory is watched.
    assert ChangeFilter([Path("/home/me/.projects/site")]).matches("/home/me/.projects/site/app.py")


def test_patterns_given_replace_the_defaults_they_name() -> None:
    root = Path("/srv/site")
    only_templates = ChangeFilter([root], includes=["templates/*.html"], excludes=["*.py"])
    assert only_templates.includes == ["templates/*.html"]
    assert only_templates.matches(root / "templates" / "index.html")
    assert not only_templates.matches(root / "other" / "index.html")
    assert not only_templates.matches(root / "app.py")
    assert ChangeFilter([root], includes=[".*"]).excludes == [".py[cod]", ".sw.*", "~*"]
    assert ChangeFilter([root], includes=[".env"]).matches(root / ".env")  # named outright: never excluded
    nested = ChangeFilter([root, root / ".config"], includes=["*.toml"])
    assert nested.matches(root / ".config" / "site.toml")  # judged from the nearest watched directory
    assert not nested.matches(root / ".local" / "site.toml")
    subtree = ChangeFilter([root], excludes=["build/generated"])
    assert not subtree.matches(root / "build" / "generated" / "models.py")
    assert subtree.matches(root / "build" / "models.py")
