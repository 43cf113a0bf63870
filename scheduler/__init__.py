"""The cron process for notification jobs. Not built yet (issue: notification jobs); nothing here runs."""
