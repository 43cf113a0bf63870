"""Wishlist e-mails: who gets what for a job run, and sending it through a mailer."""
