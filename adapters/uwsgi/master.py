"""Imported by uWSGI's master (``--shared-import``) before it forks the workers.

TERM and INT are blocked in the master, and so in every worker it forks (a
forked process keeps the signal mask): uWSGI's master would answer them with
its brutal shutdown, and a worker would exit on the spot, in the middle of its
requests and without its exit hooks. That is what a service manager or a
terminal signalling the whole process group does. anyserve stops the master
itself (QUIT), and each worker turns a TERM or INT that reaches it into its
graceful stop (see ``worker.py``).

Python's stderr, here and so in every worker, is anyserve's own stderr: uWSGI's
own lines go through a pipe anyserve reads (``__init__.py``), the messages of
anyserve and of the app do not.
"""

from __future__ import annotations

import os
import signal
import sys

from . import STDERR_ENV
from .worker import STOP_SIGNALS

signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
if STDERR_ENV in os.environ:
    sys.stderr = open(int(os.environ[STDERR_ENV]), "w", buffering=1, errors="backslashreplace", closefd=False)
