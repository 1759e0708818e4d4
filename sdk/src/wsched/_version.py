"""The SDK's version, sent in each request's User-Agent."""

from __future__ import annotations

__version__ = "0.1.0"
