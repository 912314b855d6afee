"""Access control: per-route address lists and credential policies — API
keys, HTTP Basic, JWT bearer tokens and forward auth (docs/auth.md).

The engine runs its compiled form of this policy; this reference is what
``rproxy run --no-native`` and the test kit (``rproxy.testing``) run, and it
spells out docs/auth.md in plain Python, decision for decision as the
engine takes them:

- a route's ``deny`` list refuses the client's address with 403, then its
  ``allow`` list (when it has one) refuses every other address;
- its policies are tried in order, and the first that accepts the request
  lets it through, with its credential removed (unless
  ``forward_credentials``) and ``ctx["auth"]`` saying who it is;
- when none accepts it, the answer is 401 with each policy's challenge —
  or, at once, 403 from an auth service that refuses the caller, 502 from
  one that cannot be asked.

Its one hook, ``rproxy_access``, is ``tryfirst``, so a plugin's ordinary
access hook only sees requests it let through. It is registered before the
``headers`` built-in, so pluggy calls it after that one's: a CORS preflight
is answered before authentication, as in the engine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import bcrypt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from rproxy._authfiles import b64url_decode, key_suits
from rproxy._engine import Request, Response
from rproxy.builtins.router import _query_parameters
from rproxy.config import ApiKeyAuth, AuthSettings, BasicAuth, Config, ForwardAuth, JwtAuth, UpstreamSettings
from rproxy.errors import ConfigError
from rproxy.plan import native
from rproxy.plugins import hookimpl
from rproxy.sha_crypt import sha512_check

#: Successful Basic checks and forward-auth decisions remembered, at most
#: (then the memory starts over).
REMEMBERED = 10_000
#: bcrypt compares at most this many password bytes; longer passwords are
#: refused rather than silently cut.
BCRYPT_MAX = 72
#: Most bytes of an auth service's answer read (and discarded).
MAX_BODY = 64 * 1024
#: Deepest nesting of arrays and objects a token's JSON may have (as the engine's parser).
JSON_DEPTH = 127


# -- outcomes ---------------------------------------------------------------------------


@dataclass
class Pass:
    """Accepted: who it is, and fields to set on the request (``None``:
    remove the field, whatever the client sent)."""

    user: str
    claims: dict[str, Any] = field(default_factory=dict)
    fields: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class Challenge:
    """Not accepted; the ``WWW-Authenticate`` value to send, if any."""

    value: str | None


@dataclass
class Refuse:
    """Refused outright, with this status (403 or 502)."""

    status: int


Outcome = Pass | Challenge | Refuse


def refusal(status: int, challenges: Iterable[str] = ()) -> Response:
    """A 401 (with its challenges), 403 or 502 with a one-line body."""
    fields = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]
    fields += [("www-authenticate", c) for c in challenges]
    return Response(status, fields, f"{status} {HTTPStatus(status).phrase}\n")


def challenge(scheme: str, realm: str, extra: str = "") -> str:
    """``scheme realm="REALM"`` and ``extra``, the realm quoted (RFC 9110 §5.6.4)."""
    realm = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'{scheme} realm="{realm}"{extra}'


def credentials(request: Request, scheme: str) -> str | None:
    """The credentials of the first ``Authorization`` field if its scheme is
    ``scheme`` (case-insensitive): the text after the scheme and its spaces.
    A field with anything but visible ASCII, spaces and tabs has none."""
    value = request.headers.get("authorization")
    if value is None or re.search(r"[^\x20-\x7e\t]", value):
        return None
    given, space, rest = value.partition(" ")
    if not space or given.lower() != scheme.lower():
        return None
    return rest.lstrip(" ") or None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- policies ---------------------------------------------------------------------------


class Policy:
    """One ``[auth.NAME]`` policy, ready for requests."""

    def __init__(self, settings: AuthSettings) -> None:
        self.name = settings.name
        self.type = settings.type
        self.forward_credentials = settings.forward_credentials

    def check(self, request: Request) -> Outcome:
        raise NotImplementedError

    def credential_field(self) -> str | None:
        """The field carrying the credential, removed unless ``forward_credentials``."""
        return "authorization"


class ApiKeys(Policy):
    """``type = "api_key"``: keys looked up by their SHA-256 digests."""

    def __init__(self, settings: ApiKeyAuth) -> None:
        super().__init__(settings)
        self.header = settings.header
        self.query = settings.query
        self.keys = {_sha256(key.encode()): holder for holder, key in settings.keys}
        where = f', header="{self.header}"' if self.header is not None else f', query="{self.query}"'
        self.challenge = challenge("ApiKey", settings.realm, where)

    def credential_field(self) -> str | None:
        return self.header  # a key in the query stays there

    def check(self, request: Request) -> Outcome:
        key: bytes | None = None
        if self.header is not None:
            value = request.headers.get(self.header)
            # Views show bytes above 0x7F as Latin-1: this gives back the field's bytes.
            key = None if value is None else value.encode("latin-1")
        elif request.query is not None:
            found = (v for n, v in _query_parameters(request.query) if n == self.query)
            value = next(found, None)
            key = None if value is None else value.encode()
        holder = None if key is None else self.keys.get(_sha256(key))
        if holder is None:
            return Challenge(self.challenge)
        return Pass(holder)


class Basic(Policy):
    """``type = "basic"``: HTTP Basic (RFC 7617) against htpasswd entries."""

    def __init__(self, settings: BasicAuth) -> None:
        super().__init__(settings)
        self.users = dict(settings.users)
        self.challenge = challenge("Basic", settings.realm, ', charset="UTF-8"')
        #: Digests of (user, password, hash) that verified.
        self.verified: set[bytes] = set()

    def check(self, request: Request) -> Outcome:
        fail = Challenge(self.challenge)
        encoded = credentials(request, "Basic")
        decoded = None if encoded is None else _base64(encoded)
        if decoded is None:
            return fail
        user_bytes, colon, password = decoded.partition(b":")
        if not colon:
            return fail
        try:
            user = user_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return fail
        hashed = self.users.get(user)
        if hashed is None:
            return fail
        memo = _sha256(user_bytes + b"\0" + password + b"\0" + hashed.encode())
        known = memo in self.verified
        if not known and not verify(password, hashed):
            return fail
        if not known:
            if len(self.verified) >= REMEMBERED:
                self.verified.clear()
            self.verified.add(memo)
        return Pass(user)


def _base64(text: str) -> bytes | None:
    """Standard base64 with its padding, canonical (RFC 4648 §4), or ``None``."""
    if len(text) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if base64.b64encode(data).decode("ascii") == text else None


def verify(password: bytes, hashed: str) -> bool:
    """Whether ``password`` matches the htpasswd ``hash`` (bcrypt or ``$6$``)."""
    if hashed.startswith("$6$"):
        return sha512_check(password, hashed)
    if len(password) > BCRYPT_MAX:
        return False
    try:
        return bcrypt.checkpw(password, hashed.encode())
    except ValueError:
        return False


class _Key:
    """A JWT verification key: its ``kid``, its own ``alg`` and its material."""

    def __init__(self, jwk: dict[str, str]) -> None:
        self.jwk = jwk
        self.kid = jwk.get("kid")
        self.secret = b""
        self.rsa: rsa.RSAPublicKey | None = None
        self.ec: ec.EllipticCurvePublicKey | None = None
        if jwk["kty"] == "oct":
            self.secret = b64url_decode(jwk["k"]) or b""
        elif jwk["kty"] == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]) or b"", "big")
            e = int.from_bytes(b64url_decode(jwk["e"]) or b"", "big")
            self.rsa = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            x = int.from_bytes(b64url_decode(jwk["x"]) or b"", "big")
            y = int.from_bytes(b64url_decode(jwk["y"]) or b"", "big")
            self.ec = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            if self.rsa is not None:
                if len(signature) != (self.rsa.key_size + 7) // 8:
                    return False
                self.rsa.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                return True
            if self.ec is not None:
                # JWS signs ES256 with R and S, 32 bytes each (RFC 7518 §3.4).
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                self.ec.verify(der, message, ec.ECDSA(hashes.SHA256()))
                return True
        except InvalidSignature:
            return False
        tag = hmac.new(self.secret, message, hashlib.sha256).digest()
        return hmac.compare_digest(tag, signature)


class Jwt(Policy):
    """``type = "jwt"``: bearer tokens (RFC 6750) in JWS compact form (RFC
    7515), signed with HS256, RS256 or ES256, their registered claims
    checked (RFC 7519 §4.1)."""

    def __init__(self, settings: JwtAuth) -> None:
        super().__init__(settings)
        self.algorithms = settings.algorithms
        self.keys = [_Key(dict(jwk)) for jwk in settings.keys]
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.leeway = settings.leeway
        self.missing = challenge("Bearer", settings.realm)
        self.invalid = challenge("Bearer", settings.realm, ', error="invalid_token"')

    def check(self, request: Request) -> Outcome:
        token = credentials(request, "Bearer")
        if token is None:
            return Challenge(self.missing)
        claims = self.claims(token)
        if claims is None:
            return Challenge(self.invalid)
        sub = claims.get("sub")
        return Pass(sub if isinstance(sub, str) else "", claims)

    def claims(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """The payload of ``token`` if it is valid at ``now`` (default: now)."""
        segments = token.split(".")
        if len(segments) != 3:
            return None
        h, p, s = segments
        header = _json(b64url_decode(h))
        if not isinstance(header, dict) or "crit" in header:
            return None  # no extension is understood (RFC 7515 §4.1.11)
        name = header.get("alg")
        if not isinstance(name, str) or name not in self.algorithms:
            return None
        signature = b64url_decode(s)
        if signature is None:
            return None
        message = f"{h}.{p}".encode("ascii")
        verified = any(
            key_suits(key.jwk, name)
            and ("kid" not in header or (isinstance(header["kid"], str) and key.kid == header["kid"]))
            and key.verifies(message, signature)
            for key in self.keys
        )
        if not verified:
            return None
        claims = _json(b64url_decode(p))
        if not isinstance(claims, dict):
            return None
        now = time.time() if now is None else now
        if "exp" in claims and not (_number(claims["exp"]) and now < float(claims["exp"]) + self.leeway):
            return None
        if "nbf" in claims and not (_number(claims["nbf"]) and now >= float(claims["nbf"]) - self.leeway):
            return None
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return None
        if self.audience:
            aud = claims.get("aud")
            given = aud if isinstance(aud, list) else [aud]
            if not any(isinstance(a, str) and a in self.audience for a in given):
                return None
        return claims


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json(data: bytes | None) -> Any:
    """``data`` as JSON, read as strictly as the engine's parser reads it
    (UTF-8; no NaN or infinite numbers; no lone surrogates; at most
    ``JSON_DEPTH`` levels), or ``None``."""
    if data is None:
        return None
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite, parse_int=_in_range)
    except (ValueError, RecursionError, OverflowError):
        return None
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if re.search("[\ud800-\udfff]", item):
                return None
        elif isinstance(item, dict | list):
            if depth >= JSON_DEPTH:
                return None
            members = [*item, *item.values()] if isinstance(item, dict) else item
            stack += [(m, depth + 1) for m in members]
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return number


def _in_range(text: str) -> int:
    number = int(text)
    float(number)  # OverflowError beyond what a double holds, as the engine's parser
    return number


@dataclass(frozen=True)
class _Decision:
    """An auth service's answer: allow (with the fields to copy), challenge, or forbid."""

    status: int  # 200, 401 or 403
    fields: tuple[tuple[str, str | None], ...] = ()
    challenge: str | None = None


class Forward(Policy):
    """``type = "forward"``: ask an auth service, like nginx's
    ``auth_request``; remember its decisions for ``cache`` seconds."""

    def __init__(self, settings: ForwardAuth, pool: UpstreamSettings) -> None:
        super().__init__(settings)
        self.pool = pool
        self.path = settings.path
        self.send = settings.send_headers
        self.copy = settings.copy_headers
        self.cache = settings.cache
        self.decisions: dict[bytes, tuple[float, _Decision]] = {}

    def check(self, request: Request) -> Outcome:
        # The sent fields, which are also the cache key.
        sent = [(name, value) for name in self.send for value in request.headers.get_all(name)]
        key = "".join(f"{name}: {value}\r\n" for name, value in sent).encode("latin-1")
        decision = None
        if self.cache > 0:
            remembered = self.decisions.get(key)
            if remembered is not None and time.monotonic() - remembered[0] < self.cache:
                decision = remembered[1]
        if decision is None:
            try:
                decision = self.ask(sent, request)
            except (OSError, http.client.HTTPException, ValueError):
                return Refuse(502)
            if self.cache > 0:
                if len(self.decisions) >= REMEMBERED:
                    self.decisions.clear()
                self.decisions[key] = (time.monotonic(), decision)
        if decision.status == 401:
            return Challenge(decision.challenge)
        if decision.status == 403:
            return Refuse(403)
        return Pass("", {}, list(decision.fields))

    def ask(self, sent: list[tuple[str, str]], request: Request) -> _Decision:
        """``GET path`` of the auth service with the sent fields and the
        request's particulars; raises when it cannot be asked or answers
        anything but 2xx, 401 or 403."""
        conn = self.connect()
        try:
            conn.putrequest("GET", self.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("host", str(self.pool.servers[0]))
            for name, value in sent:
                conn.putheader(name, value)
            conn.putheader("x-original-method", request.method)
            conn.putheader("x-original-uri", request.uri)
            conn.putheader("x-forwarded-for", request.client or "")
            conn.putheader("x-forwarded-proto", request.scheme)
            host = request.headers.get("host")
            if host is not None:
                conn.putheader("x-forwarded-host", host)
            conn.endheaders()
            if conn.sock is not None:
                conn.sock.settimeout(self.pool.response_timeout)
            answer = conn.getresponse()
            if conn.sock is not None:
                conn.sock.settimeout(self.pool.body_idle_timeout)
            answer.read(MAX_BODY + 1)  # discarded; a longer body is left unread
            status = answer.status
            if 200 <= status < 300:
                return _Decision(200, tuple((name, _field(answer, name)) for name in self.copy))
            if status == 401:
                return _Decision(401, challenge=_field(answer, "www-authenticate"))
            if status == 403:
                return _Decision(403)
            raise http.client.HTTPException(f"the auth service answered {status}: neither 2xx, 401 nor 403")
        finally:
            conn.close()

    def connect(self) -> http.client.HTTPConnection:
        """A connection to the first of the pool's servers that accepts one."""
        failure: OSError = ConnectionError("the pool has no server")
        for server in self.pool.servers:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=self.pool.connect_timeout)
            try:
                conn.connect()
            except OSError as e:
                failure = e
                conn.close()
                continue
            return conn
        raise failure


def _field(answer: http.client.HTTPResponse, name: str) -> str | None:
    """The first ``name`` field of ``answer`` (its value without surrounding white space)."""
    value = answer.msg.get(name)
    if value is None:
        return None
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
        raise http.client.HTTPException("a field with control characters (or folded)")
    return str(value).strip(" \t")


# -- routes -----------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Rules:
    """A route's access rules."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    policies: tuple[Policy, ...] = ()


_routes: dict[str, _Rules] = {}


@hookimpl
def rproxy_configure(config: Config, options: dict[str, object]) -> None:
    global _routes
    if options:
        raise ConfigError(
            "the auth plugin has no options: it is configured by [auth.NAME] tables and the auth, allow and "
            "deny keys of routes",
            key=next(iter(options)),
        )
    policies = {name: _compile(settings, config) for name, settings in config.auth.items()}
    _routes = {
        route.name: _Rules(
            allow=tuple(ipaddress.ip_network(n) for n in route.allow),
            deny=tuple(ipaddress.ip_network(n) for n in route.deny),
            policies=tuple(policies[name] for name in route.auth),
        )
        for route in config.routes
        if route.allow or route.deny or route.auth
    }


def _compile(settings: AuthSettings, config: Config) -> Policy:
    if isinstance(settings, ApiKeyAuth):
        return ApiKeys(settings)
    if isinstance(settings, BasicAuth):
        return Basic(settings)
    if isinstance(settings, JwtAuth):
        return Jwt(settings)
    return Forward(settings, config.upstreams[settings.upstream])


def client_address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address as the lists match it: an IPv4-mapped IPv6
    address is its IPv4 address; ``None`` when it is not an address."""
    if text is None or "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@hookimpl(tryfirst=True)
@native("auth")
def rproxy_access(request: Request, ctx: dict[str, Any]) -> Response | None:
    rules = _routes.get(request.route_name or "")
    if rules is None:
        return None
    if rules.allow or rules.deny:
        ip = client_address(request.client)
        if (
            ip is None
            or any(ip in net for net in rules.deny)
            or (rules.allow and not any(ip in net for net in rules.allow))
        ):
            return refusal(403)
    if not rules.policies:
        return None
    challenges: list[str] = []
    for policy in rules.policies:
        outcome = policy.check(request)
        if isinstance(outcome, Refuse):
            return refusal(outcome.status)
        if isinstance(outcome, Challenge):
            if outcome.value is not None:
                challenges.append(outcome.value)
            continue
        credential = policy.credential_field()
        if not policy.forward_credentials and credential is not None:
            request.headers.remove(credential)
        for name, value in outcome.fields:
            request.headers.remove(name)
            if value is not None:
                request.headers.set(name, value)
        ctx["auth"] = {"policy": policy.name, "type": policy.type, "user": outcome.user, "claims": outcome.claims}
        return None
    return refusal(401, challenges)
