"""Senders: one per destination type behind one interface."""
