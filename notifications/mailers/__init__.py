"""Mailer implementations: ``sendgrid`` (the real library), ``log`` (no key), ``stub`` (tests)."""
