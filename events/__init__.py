"""Events: the HTTP contract, storage, quarantine, read models, and accepting events."""
