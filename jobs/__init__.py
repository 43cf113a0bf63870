"""Notification jobs: contract, storage, schedules, runs, e-mails and mailers."""
