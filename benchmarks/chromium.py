"""Debian's Chromium as the tests and benchmarks launch it (Playwright cannot download one).

Defined in `devtools.browser`, which also runs it inside a network namespace.
"""

from __future__ import annotations

from devtools.browser import CHROMIUM, CHROMIUM_ARGS

__all__ = ["CHROMIUM", "CHROMIUM_ARGS"]
