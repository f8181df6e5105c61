"""Tests: fast ones by default; markers slow, gpu and network (pyproject.toml)."""
