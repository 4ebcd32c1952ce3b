"""The command line of a child process that runs one of anyserve's modules.

``python -m anyserve`` puts the working directory first on ``sys.path``, so a
folder there named ``anyserve`` (a clone, a project's own package) would be
imported in place of the installed anyserve. The child runs under ``-c``
instead, drops that first entry, and then runs the module as ``-m`` would.
The app's own directory is put on ``sys.path`` later, by ``--app-dir``.
"""

from __future__ import annotations

import sys

_BOOTSTRAP = (
    "import runpy, sys\n"
    "if sys.path[:1] == ['']:\n"  # not there under -I, -P or PYTHONSAFEPATH
    "    del sys.path[0]\n"
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
)


def python_command(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with the working directory kept off the front of ``sys.path``."""
    return [sys.executable, "-c", _BOOTSTRAP.format(module=module), *args]
