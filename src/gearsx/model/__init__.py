"""Populated by the issues that implement this namespace (see CHANGELOG.md)."""

__all__: list[str] = []
