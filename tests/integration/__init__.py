"""Integration tests: real MLServer processes on 127.0.0.1.

A package so that its conftest.py is `integration.conftest`, not a second top-level `conftest`
(tests/unit imports helpers from tests/conftest.py by that name).
"""
