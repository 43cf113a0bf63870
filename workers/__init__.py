"""Dramatiq actors: thin wrappers that call a store/service function per message."""
