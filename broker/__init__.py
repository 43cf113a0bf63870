"""Broker adapters: queue names and the intake that hands accepted events to the persist pool."""
