"""sd_notify: tell the service manager (``NOTIFY_SOCKET``) that the server is ready, or stopping.

The protocol of systemd's ``sd_notify(3)``: one datagram of ``KEY=VALUE`` lines
to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace). Without the variable nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("anyserve")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send *state* (e.g. ``"READY=1"``); True when sent, False without NOTIFY_SOCKET or on failure."""
    address = (os.environ if env is None else env).get(NOTIFY_SOCKET_ENV, "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]  # the abstract namespace
    elif address.startswith("/"):
        target = address
    else:
        log.warning("%s=%s: only unix socket paths and @abstract names are supported", NOTIFY_SOCKET_ENV, address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), target)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", address, exc.strerror or exc)
        return False
    return True
