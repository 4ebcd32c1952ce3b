"""The deployment options, end to end on real servers: access and error logs,
logging config, USR1 log reopening, proxy headers, mounts, virtual hosts, profiler."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from ..harness import KINDS, POLL, REPO_ROOT, Running, fetch, start_anyserve

OPS = "tests.apps.opsapp"
# The combined format without the time, so lines compare exactly.
FORMAT = '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def wait_for_text(path: Path, pattern: str, timeout: float = 20.0) -> str:
    """Wait until the file *path* matches *pattern*; return its text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if re.search(pattern, text):
            return text
        time.sleep(POLL)
    raise AssertionError(f"no {pattern!r} in {path} within {timeout} s:\n{text}")


def wait_for_lines(path: Path, count: int, timeout: float = 20.0) -> list[str]:
    """The lines of *path* once it has at least *count* of them (written on close, after the response)."""
    return wait_for_text(path, r"(?:.*\n){" + str(count) + "}", timeout).splitlines()


# -- access log --------------------------------------------------------------------------


def test_the_access_log_has_the_same_lines_on_every_server(server: str, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    running = start_anyserve(server, "tests.apps.app:app", "--access-log", str(log), "--access-log-format", FORMAT)
    try:
        url = running.url
        fetch(url, "/echo?x=1", headers={"Referer": "http://ref.example/", "User-Agent": "tester/1.0"})
        fetch(url, "/echo", method="POST", body=b"12345", headers={"User-Agent": "tester/1.0"})
        fetch(url, "/big?size=200000", headers={"User-Agent": "tester/1.0"})  # streamed in chunks
        fetch(url, "/caf%C3%A9/x", headers={"User-Agent": "tester/1.0"})
        fetch(url, "/nothing", method="HEAD", headers={"User-Agent": "tester/1.0"})
        fetch(url, "/raise", headers={"User-Agent": "tester/1.0"})
        lines = wait_for_lines(log, 6)
    finally:
        running.stop()
    # Each line is written when its response is done: a streamed one may come after the next request's.
    by_request = {line.split('"')[1]: line for line in lines}
    assert len(by_request) == 6, lines
    number = r"\d+"
    expected = {
        "GET /echo?x=1 HTTP/1.1": f'200 {number} "http://ref\\.example/" "tester/1\\.0"',
        "POST /echo HTTP/1.1": f'200 {number} "-" "tester/1\\.0"',
        "GET /big?size=200000 HTTP/1.1": '200 200000 "-" "tester/1\\.0"',
        "GET /caf%C3%A9/x HTTP/1.1": f'200 {number} "-" "tester/1\\.0"',
        "HEAD /nothing HTTP/1.1": '404 - "-" "tester/1\\.0"',
        "GET /raise HTTP/1.1": '500 - "-" "tester/1\\.0"',
    }
    for request, rest in expected.items():
        assert re.fullmatch(f'127\\.0\\.0\\.1 - - "{re.escape(request)}" {rest}', by_request[request]), by_request
    # The server's own access line is off: the paths are not on stderr.
    assert "/big" not in running.stderr_text() and "/echo" not in running.stderr_text()


def test_the_default_format_is_apache_combined(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    running = start_anyserve("cheroot", "tests.apps.app:app", "--access-log", str(log))
    try:
        fetch(running.url, "/big?size=10", headers={"User-Agent": "ua"})
        line = wait_for_lines(log, 1)[0]
    finally:
        running.stop()
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /big\?size=10 HTTP/1\.1" '
        r'200 10 "-" "ua"',
        line,
    ), line


def test_usr1_reopens_the_log_files(server: str, tmp_path: Path) -> None:
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    running = Running(
        server,
        [
            *("-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT)),
            *("--access-log", str(access), "--error-log", str(errors), "--access-log-format", "%(r)s"),
            "tests.apps.app:app",
        ],
    )
    try:
        url = re.search(r"Listening on (http://\S+)", wait_for_text(errors, r"Listening on http://\S+\n")).group(1)
        fetch(url, "/echo?before")
        wait_for_text(access, "before")
        access.rename(tmp_path / "access.log.1")  # what logrotate does
        errors.rename(tmp_path / "error.log.1")
        running.proc.send_signal(signal.SIGUSR1)
        # Requests until one lands in the new file: gunicorn's workers reopen after its master.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (access.exists() and "after" in access.read_text()):
            fetch(url, "/echo?after")
            time.sleep(POLL)
        assert running.proc.poll() is None, "USR1 ended the server"
    finally:
        code = running.stop()
    assert "after" in access.read_text(), errors.read_text() + running.stderr_text()
    assert "before" in (tmp_path / "access.log.1").read_text()
    assert errors.exists() and "Stopped" in errors.read_text()  # the error log was reopened too
    assert code == 0
    assert "Listening on" not in running.stderr_text()  # anyserve's messages went to the error log


def test_log_config_reaches_anyserve_and_the_server_loggers(tmp_path: Path) -> None:
    out = tmp_path / "all.log"
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "formatters": {"mine": {"format": "MINE %(name)s %(message)s"}},
                "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "mine"}},
                "root": {"handlers": ["file"], "level": "INFO"},
            }
        )
    )
    args = ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "--log-config", str(config), "--log-level", "debug"]
    running = Running("gunicorn", [*args, APP])
    try:
        text = wait_for_text(out, r"MINE anyserve Listening on http://")
    finally:
        running.stop()
    # gunicorn's own messages, through the same handlers (its INFO lines with --log-level debug)
    assert "MINE gunicorn.error Booting worker" in text


APP = "tests.apps.app:app"


# -- behind a proxy ----------------------------------------------------------------------

FORWARDED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "www.example.com",
    "X-Forwarded-Prefix": "/shop",
}


@pytest.mark.parametrize("server", KINDS)
def test_proxy_headers_from_a_trusted_peer(server: str) -> None:
    running = start_anyserve(server, f"{OPS}:environ", "--proxy-headers")
    try:
        seen = json.loads(fetch(running.url, "/path", headers=FORWARDED).body)
        plain = json.loads(fetch(running.url, "/path").body)
    finally:
        running.stop()
    seen.pop("pid")
    assert seen == {
        "SCRIPT_NAME": "/shop",
        "PATH_INFO": "/path",
        "REMOTE_ADDR": "203.0.113.9",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "www.example.com",
        "SERVER_NAME": "www.example.com",
        "SERVER_PORT": "443",
    }
    assert plain["REMOTE_ADDR"] == "127.0.0.1" and plain["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("server", KINDS)
def test_proxy_headers_from_an_untrusted_peer_change_nothing(server: str) -> None:
    running = start_anyserve(server, f"{OPS}:environ", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8")
    try:
        seen = json.loads(fetch(running.url, "/path", headers=FORWARDED).body)
    finally:
        running.stop()
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"], seen["SCRIPT_NAME"]) == ("127.0.0.1", "http", "")
    assert seen["HTTP_HOST"].startswith("127.0.0.1:")


@pytest.mark.parametrize("server", ["cheroot", "gunicorn"])
def test_a_cherrypy_app_sees_with_proxy_headers_what_tools_proxy_shows(server: str) -> None:
    headers = {"X-Forwarded-For": "198.51.100.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
    tool = start_anyserve(server, "tests.apps.cpproxy:proxied")
    try:
        with_tool = json.loads(fetch(tool.url, "/base", headers=headers).body)
    finally:
        tool.stop()
    ours = start_anyserve(server, "tests.apps.cpproxy:plain", "--proxy-headers")
    try:
        with_option = json.loads(fetch(ours.url, "/base", headers=headers).body)
    finally:
        ours.stop()
    assert with_tool == {
        "base": "https://shop.example",
        "remote_ip": "198.51.100.4",
        "scheme": "http",  # tools.proxy changes request.base, not request.scheme
        "url": "https://shop.example/base",
    }
    assert with_option == {**with_tool, "scheme": "https"}


# -- several apps ------------------------------------------------------------------------

ROUTES = [
    ("/app0", "127.0.0.1", 200, "app0 script_name=/app0 path_info="),
    ("/app0/a/b", "127.0.0.1", 200, "app0 script_name=/app0 path_info=/a/b"),
    ("/app1/", "127.0.0.1", 200, "app1 script_name=/app1 path_info=/"),
    ("/app10", "127.0.0.1", 200, "default script_name= path_info=/app10"),
    ("/else", "127.0.0.1", 200, "default script_name= path_info=/else"),
    ("/app0/x", "Company.COM", 200, "app2 script_name= path_info=/app0/x"),
    ("/x", "a.home.net", 200, "app1 script_name= path_info=/x"),
]


def check_routes(url: str) -> None:
    port = url.rsplit(":", 1)[1]
    for path, host, status, body in ROUTES:
        response = fetch(url, path, headers={"Host": f"{host}:{port}"})
        assert (response.status, response.body.decode()) == (status, body), (path, host)


@pytest.mark.parametrize("server", KINDS)
def test_mounts_and_virtual_hosts(server: str) -> None:
    running = start_anyserve(
        server,
        f"{OPS}:default",
        *("--mount", f"/app0={OPS}:app0", "--mount", f"/app1={OPS}:app1"),
        *("--vhost", f"company.com={OPS}:app2", "--vhost", f"*.home.net={OPS}:app1"),
    )
    try:
        check_routes(running.url)
    finally:
        running.stop()


def test_mounts_and_virtual_hosts_from_a_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "anyserve.toml"
    config.write_text(
        f'app = "{OPS}:default"\n'
        f'[mount]\n"/app0" = "{OPS}:app0"\n"/app1" = "{OPS}:app1"\n'
        f'[vhost]\n"company.com" = "{OPS}:app2"\n"*.home.net" = "{OPS}:app1"\n'
    )
    running = Running("cheroot", ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "-c", str(config)])
    try:
        running.wait_listening()
        check_routes(running.url)
    finally:
        running.stop()


def test_without_a_default_app_other_paths_and_hosts_get_404() -> None:
    args = ["--mount", f"/app0={OPS}:app0", "--vhost", f"company.com={OPS}:app2"]
    running = Running("waitress", ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), *args])
    try:
        running.wait_listening()
        assert fetch(running.url, "/app0/x").status == 200
        assert fetch(running.url, "/app1").status == 404
        assert fetch(running.url, "/", headers={"Host": "company.com"}).body.startswith(b"app2")
    finally:
        running.stop()


@pytest.mark.parametrize("server", ["cheroot", "gunicorn"])
def test_cherrypy_apps_among_the_mounts_get_the_engine(server: str) -> None:
    mounts = ["--mount", "/cp=tests.apps.cpapp:root", "--mount", "/cpa=tests.apps.cpapp:application"]
    running = start_anyserve(server, f"{OPS}:default", *mounts)
    try:
        state = json.loads(fetch(running.url, "/cp/state").body)
        root = fetch(running.url, "/cp/")
        application = fetch(running.url, "/cpa/")
        other = fetch(running.url, "/x")
    finally:
        running.stop()
    assert state["started"] is True and state["environment"] == "embedded"
    assert root.body == b"cherrypy root"
    assert other.body == b"default script_name= path_info=/x"
    assert application.body == b"cherrypy root"


# -- profiler ----------------------------------------------------------------------------


@pytest.mark.parametrize("server", KINDS)
def test_one_profile_per_request(server: str, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    running = start_anyserve(server, "tests.apps.app:app", "-P", str(profiles))
    try:
        assert fetch(running.url, "/echo").status == 200
        assert fetch(running.url, "/big?size=100000").body[:3] == bytes(range(3))
    finally:
        running.stop()
    names = sorted(path.name for path in profiles.iterdir())
    assert len(names) == 2, names
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}-GET-echo-\d+\.\dms\.prof", names[0]), names
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}-GET-big-\d+\.\dms\.prof", names[1]), names


def test_no_profile_by_default(tmp_path: Path) -> None:
    running = start_anyserve("cheroot", "tests.apps.app:app")
    try:
        fetch(running.url, "/echo")
    finally:
        running.stop()
    assert not list(Path(REPO_ROOT).glob("*.prof")) and not list(tmp_path.iterdir())


def test_cherrypy_roots_for_several_hosts_and_prefixes() -> None:
    sites = "tests.apps.cpsites"
    running = start_anyserve(
        "cheroot",
        f"{sites}:third",
        *("--vhost", f"a.example={sites}:first", "--vhost", f"b.example={sites}:second"),
        *("--mount", f"/second={sites}:second"),
    )
    try:
        answers = {
            host + path: fetch(running.url, path, headers={"Host": host}).body.decode()
            for host, path in [("a.example", "/"), ("b.example", "/"), ("other", "/"), ("other", "/second/")]
        }
    finally:
        running.stop()
    assert answers == {
        "a.example/": "first at / engine states.STARTED",
        "b.example/": "second at / engine states.STARTED",
        "other/": "third at / engine states.STARTED",
        "other/second/": "second at /second engine states.STARTED",
    }


def test_usr1_under_reload_reaches_the_serving_child(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    running = Running(
        "wsgiref",
        [
            *("-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "--reload"),
            *("--access-log", str(access), "--access-log-format", "%(r)s", APP),
        ],
    )
    try:
        running.wait_listening()
        fetch(running.url, "/echo?before")
        wait_for_text(access, "before")
        access.rename(tmp_path / "access.log.1")
        running.proc.send_signal(signal.SIGUSR1)  # to the watcher, which passes it on
        running.wait_for_output(r"Received SIGUSR1: reopened [\s\S]*Received SIGUSR1: reopened")
        fetch(running.url, "/echo?after")
        wait_for_text(access, "after")
        assert running.proc.poll() is None
    finally:
        assert running.stop() == 0
    assert "after" not in (tmp_path / "access.log.1").read_text()
