"""Bad input to the deployment options: one clear line, a named exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyserve.errors import EXIT_APP, EXIT_USAGE

from .test_cli import WSGI_APP, assert_error, run


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(WSGI_APP)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--mount", "app0=webapp:application"],
            ["invalid value for --mount", "the prefix 'app0' must start with '/', e.g. /app0=webapp:application"],
        ),
        (["--mount", "/app0"], ["invalid value for --mount", "expected KEY=VALUE"]),
        (["--vhost", "example.com:8080=webapp:application"], ["invalid value for --vhost", "expected a host name"]),
        (["--forwarded-allow-ips", "10.0.0.999", "--proxy-headers"], ["--forwarded-allow-ips", "'10.0.0.999'"]),
        (["--access-log-format", "%(h)d"], ["invalid value for --access-log-format"]),
        (["--access-log", "nodir/access.log"], ["--access-log: cannot open nodir/access.log"]),
        (["--error-log", "nodir/error.log"], ["--error-log: cannot open nodir/error.log"]),
        (["--log-config", "missing.toml"], ["--log-config: file missing.toml does not exist"]),
        (["--mount", "/=webapp:application"], ["--mount /=APP and the positional APP both name the default app"]),
    ],
)
def test_bad_deployment_options(site: Path, args: list[str], fragments: list[str]) -> None:
    assert_error(run("-s", "wsgiref", "-p", "0", *args, "webapp:application", cwd=site), EXIT_USAGE, *fragments)


def test_a_bad_mounted_app_is_named(site: Path) -> None:
    result = run("-s", "wsgiref", "-p", "0", "--mount", "/x=webapp:nothing", "webapp:application", cwd=site)
    assert_error(result, EXIT_APP, "nothing")


def test_a_bad_log_config_file(site: Path) -> None:
    (site / "logging.json").write_text('{"handlers": {"h": {"class": "no.such.Handler"}}}')
    result = run("-s", "wsgiref", "-p", "0", "--log-config", "logging.json", "webapp:application", cwd=site)
    assert_error(result, EXIT_USAGE, "--log-config: logging.json is not a valid logging configuration")


def test_no_app_and_no_mount_is_still_refused(site: Path) -> None:
    assert_error(run("-s", "wsgiref", "-p", "0", cwd=site), EXIT_USAGE, "no APP given")


def test_check_loads_the_mounted_and_virtual_host_apps(site: Path) -> None:
    args = ["-p", "0", "--mount", "/x=webapp:application", "--vhost", "a.com=webapp:make()"]
    result = run("check", *args, "webapp", cwd=site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "app: webapp -> webapp.application",
        "mount: /x = webapp:application -> webapp.application",
        "vhost: a.com = webapp:make() -> webapp.application",
    ]
    bad = run("check", "--mount", "/x=webapp:not_callable", cwd=site)
    assert_error(bad, EXIT_APP, "webapp:not_callable", "not a WSGI application")
