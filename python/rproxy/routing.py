"""Rules of docs/routing.md shared by the configuration checks and the router.

:func:`normalise_path` is the path every route condition sees, and
:func:`parse_template` reads the templates of ``rewrite``,
``redirect.location`` and ``upstream_host``. ``rproxy.config`` uses them to
reject routes that could never match or templates with unknown variables;
``rproxy.builtins.router`` uses them on requests.
"""

from __future__ import annotations

import string

__all__ = ["VARIABLES", "normalise_path", "parse_template"]

#: The template variables every route has (besides the groups of its ``path_regex``).
VARIABLES = ("host", "path", "query", "request_uri", "scheme", "method", "route")

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_NAME = frozenset(string.ascii_letters + string.digits + "_")


def normalise_path(raw: str) -> str | None:
    """``raw`` normalised as RFC 3986 §6.2.2 says, or ``None`` when it has a
    malformed escape or ``..`` segments that climb above the root.

    Escapes of unreserved characters are decoded and the others get
    upper-case hex digits; then runs of ``/`` become one, and ``.`` and
    ``..`` segments are removed (§5.2.4)::

        /api/../admin → /admin      /%61dmin → /admin      //admin → /admin
        /a%2fb → /a%2Fb             /../x → None           /%zz → None
    """
    out: list[str] = []
    i = 0
    while i < len(raw):
        if raw[i] != "%":
            out.append(raw[i])
            i += 1
            continue
        digits = raw[i + 1 : i + 3]
        if len(digits) != 2 or not set(digits) <= _HEX:
            return None
        char = chr(int(digits, 16))
        out.append(char if char in _UNRESERVED else "%" + digits.upper())
        i += 3
    path = "".join(out)
    if not path.startswith("/"):
        return path  # "*" of OPTIONS *: nothing to normalise
    while "//" in path:
        path = path.replace("//", "/")

    kept: list[str] = []
    segments = path[1:].split("/")
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        if segment == "..":
            if not kept:
                return None
            kept.pop()
        if segment in (".", ".."):
            if last:
                kept.append("")  # "/a/b/.." is the directory "/a/"
            continue
        kept.append(segment)
    return "/" + "/".join(kept)


def parse_template(text: str) -> tuple[tuple[str, str], ...]:
    """The pieces of template ``text``: pairs of literal text and the name of
    the variable that follows it ("" after the last piece).

    ``$name`` takes the longest run of letters, digits and ``_`` — except
    that a digit stands alone (``$12`` is ``$1`` then "2"); ``${name}``
    delimits the name; ``$$`` is a literal ``$``. Raises ``ValueError`` on a
    ``$`` that starts none of these::

        "/v2/$1x${id}$$" → (("/v2/", "1"), ("x", "id"), ("$", ""))
    """
    pieces: list[tuple[str, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            literal.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            literal.append("$")
            i += 2
            continue
        if following == "{":
            end = text.find("}", i + 2)
            if end < 0:
                raise ValueError('"${" has no closing "}"')
            name = text[i + 2 : end]
            if not name or not set(name) <= _NAME:
                raise ValueError(f'"${{{name}}}" is not a variable (names are letters, digits and "_")')
            i = end + 1
        elif following and following in string.digits:
            name = following
            i += 2
        elif following and following in _NAME:
            end = i + 1
            while end < len(text) and text[end] in _NAME:
                end += 1
            name = text[i + 1 : end]
            i = end
        else:
            raise ValueError('a "$" must start a variable ($name or ${name}); write "$$" for a "$"')
        pieces.append(("".join(literal), name))
        literal = []
    if literal or not pieces:
        pieces.append(("".join(literal), ""))
    return tuple(pieces)
