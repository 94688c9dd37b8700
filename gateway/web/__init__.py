"""Starlette helpers shared by the HTTP surfaces (`api/`, `ui/`): bodies and answers."""
