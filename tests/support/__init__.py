"""Helpers the test modules share (apps, request bodies, assertions, servers, migration rows).

No test module imports another test module: what two modules need lives here, and fixtures live
in the conftest.py files.
"""
