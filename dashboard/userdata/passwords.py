"""Salted, slow password hashes with the standard library's scrypt (RFC 7914).

Why our own twenty lines rather than argon2-cffi or bcrypt: ``hashlib.scrypt`` is a memory-hard KDF
the standard library already ships (OpenSSL's), so sign-in adds no dependency; the parameters and
the salt are stored in the hash string, so they can be raised later without breaking old hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from dashboard.userdata.errors import UserDataError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB of memory per guess; stored with each hash
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def check_new_password(password: object) -> str:
    """A password an admin may set: text of 8 to 1024 characters."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserDataError(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise UserDataError("the password is not valid Unicode text") from None
    return password


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex) of a password checked by :func:`check_new_password`."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(check_new_password(password), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, compared in constant time; False for anything malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
        return hmac.compare_digest(computed, bytes.fromhex(digest))
    except (ValueError, UnicodeEncodeError):
        return False


DUMMY_HASH = hash_password("not-a-real-password")  # verified against for unknown names, so timing tells nothing
