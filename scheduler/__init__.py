"""The cron process for notification jobs (``python -m scheduler``); state lives in the database."""
