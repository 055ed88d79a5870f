"""gitsync: keep Omniverse Farm job definitions (.kit files) in sync with a git repository."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
