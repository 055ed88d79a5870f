"""Helpers for gitsync's own tests: importable stand-ins for the services gitsync talks to."""
