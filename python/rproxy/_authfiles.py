"""The files and keys of ``[auth.NAME]`` policies (docs/auth.md): keys
files, htpasswd files, PEM public keys and JSON Web Key Sets, read and
checked when the configuration loads, and the key conversions the engine
and the Python reference share.

A problem inside a file is a ``(line, message)`` pair; ``rproxy.config``
reports it as ``FILE:LINE: message`` at the key that names the file.

Every key is checked here so that the engine and the reference read it
alike: a key one of them could not use (an RSA modulus outside 2048 to
8192 bits, a hash whose encoding is not canonical) is a configuration
error rather than a silent difference.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "b64url",
    "b64url_decode",
    "hash_problem",
    "htpasswd",
    "jwk_of_pem",
    "jwks",
    "key_suits",
    "keys_file",
]

Problem = tuple[int, str]

#: The key type (``kty``) each algorithm needs.
KEY_TYPES = {"HS256": "oct", "RS256": "RSA", "ES256": "EC"}

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BCRYPT64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})")
_SHA512_ROUNDS = (1000, 999_999_999)
_STRONG = "use bcrypt (htpasswd -B) or SHA-512-crypt ($6$)"


# -- base64url (RFC 7515 §2) ---------------------------------------------------------


def b64url(data: bytes) -> str:
    """``data`` in base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """The bytes of base64url ``text`` without padding, or ``None`` unless it
    is exactly that, canonical (no stray bits in its last character)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url(data) == text else None


# -- keys files ----------------------------------------------------------------------


def _lines(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` that are not blank or comments, stripped, numbered from 1."""
    out = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


def keys_file(text: str) -> tuple[list[tuple[int, str, str]], list[Problem]]:
    """The ``(line, holder, key)`` entries of a keys file of ``NAME:KEY``
    lines, and its problems."""
    entries: list[tuple[int, str, str]] = []
    problems: list[Problem] = []
    for n, line in _lines(text):
        holder, colon, key = line.partition(":")
        holder, key = holder.strip(), key.strip()
        if not colon:
            problems.append((n, "expected NAME:KEY"))
        elif not holder or re.search(r"[\x00-\x1f\x7f]", holder):
            problems.append((n, "a key's holder is named by a non-empty string without control characters"))
        elif not key:
            problems.append((n, f'"{holder}" has an empty key'))
        elif re.search(r"[\x00-\x1f\x7f]", key):
            problems.append((n, "a key cannot have control characters"))
        else:
            entries.append((n, holder, key))
    return entries, problems


# -- htpasswd files ------------------------------------------------------------------


def htpasswd(text: str) -> tuple[list[tuple[int, str, str]], list[Problem]]:
    """The ``(line, user, hash)`` entries of an htpasswd file, and its
    problems (among them, every hash that is not bcrypt or SHA-512-crypt)."""
    entries: list[tuple[int, str, str]] = []
    problems: list[Problem] = []
    for n, line in _lines(text):
        user, colon, hashed = line.partition(":")
        if not colon:
            problems.append((n, "expected user:hash"))
        elif not user or re.search(r"[\x00-\x1f\x7f]", user):
            problems.append((n, "a user name is a non-empty string without control characters"))
        elif (problem := hash_problem(hashed)) is not None:
            problems.append((n, f'user "{user}": {problem}'))
        else:
            entries.append((n, user, hashed))
    return entries, problems


def hash_problem(hashed: str) -> str | None:
    """Why ``hashed`` cannot be accepted, or ``None`` for a well-formed
    bcrypt (``$2a$``, ``$2b$``, ``$2y$``) or SHA-512-crypt (``$6$``) hash."""
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        m = _BCRYPT.fullmatch(hashed)
        if not m:
            return "a bcrypt hash is $2y$, a two-digit cost, $, and 53 characters of salt and hash"
        if not 4 <= int(m.group(1)) <= 31:
            return f"bcrypt cost {m.group(1)} is out of range (04 to 31)"
        # 22 characters carry the 16 bytes of salt, 31 the 23 of hash; the bits left over must be 0.
        if _BCRYPT64.index(m.group(2)[-1]) & 0xF or _BCRYPT64.index(m.group(3)[-1]) & 0x3:
            return "the bcrypt hash is not canonically encoded"
        return None
    if hashed.startswith("$6$"):
        return _sha512_problem(hashed)
    if hashed.startswith("$2x$"):
        return f"$2x$ hashes come from a flawed bcrypt implementation: {_STRONG}"
    if hashed.startswith("$apr1$"):
        return f"MD5 ($apr1$) hashes are too weak to accept: {_STRONG}"
    if hashed.startswith("{SHA}"):
        return f"SHA-1 ({{SHA}}) hashes are too weak to accept: {_STRONG}"
    if hashed.startswith("$1$"):
        return f"MD5-crypt ($1$) hashes are too weak to accept: {_STRONG}"
    if hashed.startswith("$5$"):
        return f"SHA-256-crypt ($5$) hashes are not supported: {_STRONG}"
    kind = re.match(r"\$[^$]*\$", hashed)
    if kind:
        return f"unsupported hash kind {kind.group()}: {_STRONG}"
    if re.fullmatch(r"[./0-9A-Za-z]{13}", hashed):
        return f"crypt (DES) hashes are too weak to accept: {_STRONG}"
    return f"not a hash this proxy accepts (a plain-text password?): {_STRONG}"


def _sha512_problem(hashed: str) -> str | None:
    """``$6$[rounds=N$]SALT$HASH`` as the engine reads it: N from 1000 to
    999999999 (it does not clamp), SALT at most 16 characters, HASH the 86
    canonical characters of a SHA-512 digest."""
    rest = hashed.split("$")[2:]
    if rest and rest[0].startswith("rounds="):
        rounds = rest[0].removeprefix("rounds=")
        if not re.fullmatch(r"[0-9]+", rounds):
            return f'"rounds={rounds}" is not a number of rounds'
        if not _SHA512_ROUNDS[0] <= int(rounds) <= _SHA512_ROUNDS[1]:
            return f"rounds={rounds} is out of range (1000 to 999999999)"
        rest = rest[1:]
    if len(rest) != 2:
        return "a SHA-512-crypt hash is $6$, an optional rounds=N$, the salt, $, and the hash"
    salt, digest = rest
    if not re.fullmatch(r"[./0-9A-Za-z]{0,16}", salt):
        return "a SHA-512-crypt salt is at most 16 characters of [./0-9A-Za-z]"
    if not re.fullmatch(r"[./0-9A-Za-z]{86}", digest) or _CRYPT64.index(digest[-1]) > 3:
        return "a SHA-512-crypt hash ends with the 86 characters of its digest"
    return None


# -- public keys -------------------------------------------------------------------------


def _int_bytes(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def _rsa_jwk(n: int, e: int) -> dict[str, str]:
    """An RSA public key as a JWK, if the engine can verify with it."""
    if not 2048 <= n.bit_length() <= 8192:
        raise ValueError(f"an RSA key of {n.bit_length()} bits: RS256 needs 2048 to 8192")
    if n % 2 == 0 or e % 2 == 0 or not 3 <= e < 2**33:
        raise ValueError("not a valid RSA public key (its modulus must be odd, its exponent odd and from 3 to 2^33)")
    return {"kty": "RSA", "n": b64url(_int_bytes(n)), "e": b64url(_int_bytes(e))}


def _ec_jwk(x: int, y: int) -> dict[str, str]:
    """A P-256 public key as a JWK, if the point is on the curve."""
    try:
        ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError:
        raise ValueError("the point (x, y) is not on the P-256 curve") from None
    return {"kty": "EC", "crv": "P-256", "x": b64url(x.to_bytes(32, "big")), "y": b64url(y.to_bytes(32, "big"))}


def jwk_of_pem(data: bytes) -> dict[str, str]:
    """The JWK (RFC 7517) of a PEM public key: RSA or EC P-256."""
    if b"PRIVATE KEY" in data:
        raise ValueError("this is a private key: give its public key (openssl pkey -pubout)")
    if b"CERTIFICATE" in data:
        raise ValueError("this is a certificate: give its public key (openssl x509 -pubkey -noout)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return _rsa_jwk(numbers.n, numbers.e)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key on {key.curve.name}: only P-256 (secp256r1) is supported")
        point = key.public_numbers()
        return _ec_jwk(point.x, point.y)
    raise ValueError(f"a {type(key).__name__.removeprefix('_')} key: only RSA and EC P-256 keys are supported")


def _member(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    data = b64url_decode(value) if isinstance(value, str) else None
    if data is None:
        raise ValueError(f'"{name}" must be base64url without padding')
    return data


def _jwk(entry: Any) -> dict[str, str]:
    """A JWK of a key set as the engine gets it: its public members, minimal."""
    if not isinstance(entry, dict):
        raise ValueError("expected a JSON object")
    kty = entry.get("kty")
    if kty == "oct":
        if not _member(entry, "k"):
            raise ValueError("an empty key")
        out = {"kty": "oct", "k": entry["k"]}
    elif kty == "RSA":
        out = _rsa_jwk(int.from_bytes(_member(entry, "n"), "big"), int.from_bytes(_member(entry, "e"), "big"))
    elif kty == "EC":
        if entry.get("crv") != "P-256":
            raise ValueError(f"an EC key on {json.dumps(entry.get('crv'))}: only P-256 is supported")
        x, y = _member(entry, "x"), _member(entry, "y")
        if len(x) != 32 or len(y) != 32:
            raise ValueError('"x" and "y" of a P-256 key are 32 bytes each')
        out = _ec_jwk(int.from_bytes(x, "big"), int.from_bytes(y, "big"))
    else:
        raise ValueError(f"unsupported key type {json.dumps(kty)}: only oct, RSA and EC (P-256)")
    for name in ("kid", "alg"):
        if name in entry:
            if not isinstance(entry[name], str):
                raise ValueError(f'"{name}" must be a string')
            out[name] = entry[name]
    return out


def jwks(text: str) -> tuple[list[tuple[int, dict[str, str]]], list[Problem]]:
    """The ``(line, JWK)`` keys of a JSON Web Key Set, and its problems."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [(e.lineno, f"invalid JSON: {e.msg}")]
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        return [], [(1, 'expected a JSON Web Key Set: an object with a "keys" array')]
    try:
        lines = _element_lines(text)
    except (ValueError, IndexError):
        lines = []
    keys: list[tuple[int, dict[str, str]]] = []
    problems: list[Problem] = []
    for i, entry in enumerate(doc["keys"]):
        line = lines[i] if i < len(lines) else 1
        try:
            keys.append((line, _jwk(entry)))
        except ValueError as e:
            problems.append((line, f"keys[{i}]: {e}"))
    return keys, problems


def _element_lines(text: str) -> list[int]:
    """The line of each element of the top-level "keys" array of the JSON
    object ``text`` (which is valid JSON)."""
    decoder = json.JSONDecoder()

    def skip(i: int, char: str = "") -> int:
        """Past white space, then past ``char`` and white space if it is there."""
        i = len(text) - len(text[i:].lstrip(" \t\n\r"))
        if char and text.startswith(char, i):
            i = len(text) - len(text[i + 1 :].lstrip(" \t\n\r"))
        return i

    lines: list[int] = []
    i = skip(0, "{")
    while i < len(text) and text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        i = skip(i, ":")
        if key == "keys" and text.startswith("[", i):
            lines = []
            i = skip(i, "[")
            while text[i] != "]":
                lines.append(text.count("\n", 0, i) + 1)
                _, i = decoder.raw_decode(text, i)
                i = skip(i, ",")
            i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i, ",")
    return lines


def key_suits(jwk: dict[str, str], alg: str) -> bool:
    """Whether ``jwk`` may verify a token of algorithm ``alg``: its type is
    the algorithm's, and its own ``alg``, if it has one, is ``alg``."""
    return KEY_TYPES.get(alg) == jwk.get("kty") and jwk.get("alg", alg) == alg
