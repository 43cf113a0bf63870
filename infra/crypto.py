"""Encryption at rest for subscription secrets (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class SecretsUnavailable(Exception):
    """No key is configured, so secrets can be neither stored nor read."""


class SecretBox:
    """Encrypts and decrypts short secrets with the deployment's ``EC_SECRET_KEY``."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    @property
    def available(self) -> bool:
        return self._fernet is not None

    def encrypt(self, secret: str) -> str:
        if self._fernet is None:
            raise SecretsUnavailable("EC_SECRET_KEY is not configured")
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        if self._fernet is None:
            raise SecretsUnavailable("EC_SECRET_KEY is not configured")
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable("a stored secret cannot be decrypted with EC_SECRET_KEY") from None
