"""Mailers: one per e-mail provider behind one interface."""
