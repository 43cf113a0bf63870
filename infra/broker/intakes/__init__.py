"""The Intake port's two implementations: Redis (Lua) and in-memory."""
