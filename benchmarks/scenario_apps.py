"""Scenario apps for the benchmark scripts: the apps ``anyserve bench`` ships, under their names here."""

from __future__ import annotations

from anyserve.bench.scenarios import cpu, hello, json_document, large, slow, upload

#: Each request blocks for 50 ms, as a call to a slow backend would (the ``slow`` scenario).
blocking = slow

__all__ = ["blocking", "cpu", "hello", "json_document", "large", "slow", "upload"]
