"""A socket-activation harness: binds sockets, passes them the way systemd does, and execs a command.

usage: python activate.py NAME=HOST:PORT [NAME=HOST:PORT ...] -- COMMAND [ARGS ...]

The sockets land on descriptors 3, 4, ... in the order given; LISTEN_FDS,
LISTEN_PID (this process, which the command replaces) and LISTEN_FDNAMES are set
as ``sd_listen_fds_with_names(3)`` expects them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys

SD_LISTEN_FDS_START = 3


def main(argv: list[str]) -> None:
    split = argv.index("--")
    specs, command = argv[:split], argv[split + 1 :]
    names, high = [], []
    for spec in specs:
        name, _, where = spec.partition("=")
        host, _, port = where.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        # Out of the way first: the sockets themselves may sit on 3, 4, ...
        high.append(fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 100))
        sock.close()
        names.append(name)
    for i, fd in enumerate(high):
        os.dup2(fd, SD_LISTEN_FDS_START + i)  # inheritable
        os.close(fd)
    os.environ.update(LISTEN_FDS=str(len(high)), LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=":".join(names))
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
