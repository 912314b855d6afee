"""SHA-512-crypt (``$6$``), in plain Python, from Ulrich Drepper's
"Unix crypt using SHA-256 and SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt).

``sha512_crypt`` follows the document: the number of rounds is clamped to
[1000, 999999999] and the salt cut at 16 characters. ``sha512_check``
verifies a stored hash the way the engine does (the Rust ``sha-crypt``
crate): a password that is not UTF-8 never matches, and a hash whose
``rounds=N`` lies outside that range is refused rather than clamped.

Slow by design, and slower in Python: the default 5000 rounds take a few
milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["ROUNDS_DEFAULT", "ROUNDS_MAX", "ROUNDS_MIN", "sha512_check", "sha512_crypt"]

ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999
SALT_MAX = 16

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: The order in which the digest's bytes are written, three at a time
#: (the last group is the single byte 63).
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)  # fmt: skip


def _digest(password: bytes, salt: bytes, rounds: int) -> bytes:
    """Steps 1 to 21 of the algorithm: the final 64-byte digest."""
    n = len(password)
    # Digest B: password, salt, password (steps 4-8).
    b = hashlib.sha512(password + salt + password).digest()
    # Digest A (steps 1-3, 9-12).
    a = hashlib.sha512(password + salt)
    a.update(b * (n // 64) + b[: n % 64])
    bits = n
    while bits:
        a.update(b if bits & 1 else password)
        bits >>= 1
    digest_a = a.digest()
    # Byte sequence P: digest DP of the password repeated n times (steps 13-16).
    dp = hashlib.sha512(password * n).digest()
    p = dp * (n // 64) + dp[: n % 64]
    # Byte sequence S: digest DS of the salt repeated 16 + A[0] times (steps 17-20).
    ds = hashlib.sha512(salt * (16 + digest_a[0])).digest()
    s = ds * (len(salt) // 64) + ds[: len(salt) % 64]
    # The rounds (step 21).
    c = digest_a
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    return c


def _encode(digest: bytes) -> str:
    """The digest in the crypt alphabet, least significant bits first (step 22e)."""
    out = []
    for b2, b1, b0 in _ORDER:
        w = (digest[b2] << 16) | (digest[b1] << 8) | digest[b0]
        for _ in range(4):
            out.append(_ITOA64[w & 0x3F])
            w >>= 6
    w = digest[63]
    for _ in range(2):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def sha512_crypt(password: bytes, salt: str, rounds: int | None = None) -> str:
    """The ``$6$`` hash of ``password``: ``$6$SALT$HASH``, or
    ``$6$rounds=N$SALT$HASH`` when ``rounds`` is given (clamped to
    [1000, 999999999]). ``salt`` ends at its first ``$`` and at 16 characters."""
    salt = salt.split("$", 1)[0][:SALT_MAX]
    if rounds is None:
        prefix, count = "$6$", ROUNDS_DEFAULT
    else:
        count = min(max(rounds, ROUNDS_MIN), ROUNDS_MAX)
        prefix = f"$6$rounds={count}$"
    return f"{prefix}{salt}${_encode(_digest(password, salt.encode(), count))}"


def sha512_check(password: bytes, hashed: str) -> bool:
    """Whether ``password`` matches the ``$6$`` hash ``hashed``, as the
    engine decides: ``$6$[rounds=N$]SALT$HASH`` with N from 1000 to
    999999999, the salt's first 16 bytes, and a UTF-8 password."""
    try:
        password.decode("utf-8")
    except UnicodeDecodeError:
        return False
    parts = hashed.split("$")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "6":
        return False
    rest = parts[2:]
    rounds = ROUNDS_DEFAULT
    if rest[0].startswith("rounds="):
        number = rest[0].removeprefix("rounds=")
        if not re.fullmatch(r"\+?[0-9]+", number):
            return False
        rounds = int(number)
        rest = rest[1:]
    if len(rest) != 2 or not ROUNDS_MIN <= rounds <= ROUNDS_MAX:
        return False
    salt, encoded = rest
    expected = _encode(_digest(password, salt.encode()[:SALT_MAX], rounds))
    return hmac.compare_digest(expected.encode(), encoded.encode())
