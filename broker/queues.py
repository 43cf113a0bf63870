"""Queue and actor names shared by the web process (which enqueues) and the pools (which consume)."""

PERSIST_QUEUE = "persist"
PERSIST_ACTOR = "persist_events"
