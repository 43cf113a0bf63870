"""Tenants: API clients and tokens, revocation, quotas, and their AWS identity."""
