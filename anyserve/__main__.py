"""``python -m anyserve``."""

from anyserve.cli import console_script

console_script()
