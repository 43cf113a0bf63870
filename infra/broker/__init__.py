"""Broker adapters: Dramatiq brokers, queue names, the intake, rate limits, dead letters."""
