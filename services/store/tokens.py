"""Worker tokens kept for deployers: encrypted at rest with Fernet (AES-CBC + HMAC).

A pipeline's worker token authenticates its workers by its SHA-256 digest alone; a
deployer, though, must hand the token itself to the workers it starts, possibly long
after the pipeline was created (after a restart of ``wsched dev``, on a redeploy). So the
token is also stored encrypted under ``WSCHED_SECRET_KEY``, and only the control store
decrypts it, for the deployer.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Binds keys derived from the operator key to this one use: a derived key never equals
#: one derived for another purpose from the same secret.
_DEV_KEY_INFO = b"wsched/v1 worker-token encryption key (development default)"


class TokenUnreadable(Exception):
    """An encrypted token cannot be decrypted with the configured key."""


def derive_key(secret: str) -> bytes:
    """A Fernet key derived from ``secret`` (HKDF-SHA256): the development default,
    derived from the operator key so that a dev setup needs no extra setting."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DEV_KEY_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


def check_key(key: str) -> None:
    """Raise ValueError, saying how to make one, unless ``key`` is a Fernet key."""
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        raise ValueError(
            "must be a Fernet key (32 random bytes in url-safe base64, 44 characters); make "
            "one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None


class TokenCipher:
    """Encrypts and decrypts worker tokens under one key."""

    def __init__(self, *, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode("ascii")

    def decrypt(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            raise TokenUnreadable(
                "the stored worker token cannot be decrypted with WSCHED_SECRET_KEY: the key "
                "was changed since the pipeline was created (or, unset, the operator key it "
                "is derived from was)"
            ) from None
