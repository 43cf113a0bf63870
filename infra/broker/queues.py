"""Queue and actor names shared by the processes that enqueue and the pools that consume."""

PERSIST_QUEUE = "persist"
PERSIST_ACTOR = "persist_events"
DELIVER_QUEUE = "deliveries"
DELIVER_ACTOR = "deliver"
NOTIFY_QUEUE = "notifications"
NOTIFY_ACTOR = "send_notifications"
