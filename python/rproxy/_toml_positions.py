"""Where each key and value of a TOML document starts.

``tomllib`` parses TOML but forgets positions, and a config error that does
not say ``file:line:col`` wastes the user's time. This module walks text that
``tomllib`` has already accepted and records the line and column of every
table header, key and value, addressed by the same path the validator uses:
a tuple of keys and array indices, e.g. ``("upstreams", "app", "servers", 1)``.

It is deliberately forgiving: the text is known to be valid, so it only has
to find where things are, never to decide whether they are well-formed.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class Positions:
    """Line and column (both 1-based) of the keys and values of a document."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.keys: dict[Path, tuple[int, int]] = {}
        self.values: dict[Path, tuple[int, int]] = {}
        self._arrays: dict[Path, int] = {}
        self._i = 0
        # Truncated or unexpected text: keep what was found.
        with contextlib.suppress(IndexError):
            self._document()

    def locate(self, path: Path) -> tuple[int, int]:
        """Where ``path`` is written: its value, else its key, else the
        nearest enclosing table that is written, else the top of the file."""
        for n in range(len(path), 0, -1):
            p = path[:n]
            if n == len(path) and p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
        return (1, 1)

    def key_of(self, path: Path) -> tuple[int, int]:
        """Where the key of ``path`` is written (for errors about the key itself)."""
        if path in self.keys:
            return self.keys[path]
        return self.locate(path)

    # -- scanning -----------------------------------------------------------

    def _pos(self, i: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, i)
        return (line, i - self._line_starts[line - 1] + 1)

    def _peek(self, n: int = 1) -> str:
        return self._text[self._i : self._i + n]

    def _skip_ws(self) -> None:
        t = self._text
        while self._i < len(t) and t[self._i] in " \t":
            self._i += 1

    def _skip_ws_comments_newlines(self) -> None:
        t = self._text
        while self._i < len(t):
            c = t[self._i]
            if c in " \t\r\n":
                self._i += 1
            elif c == "#":
                while self._i < len(t) and t[self._i] != "\n":
                    self._i += 1
            else:
                break

    def _document(self) -> None:
        table: Path = ()
        t = self._text
        while True:
            self._skip_ws_comments_newlines()
            if self._i >= len(t):
                return
            start = self._i
            if t.startswith("[[", self._i):
                self._i += 2
                keys = self._key()
                self._i = t.index("]]", self._i) + 2
                base = self._resolve(keys[:-1]) + (keys[-1],)
                index = self._arrays.get(base, 0)
                self._arrays[base] = index + 1
                table = base + (index,)
                self.keys.setdefault(base, self._pos(start))
                self.keys[table] = self._pos(start)
            elif t[self._i] == "[":
                self._i += 1
                keys = self._key()
                self._i = t.index("]", self._i) + 1
                table = self._resolve(keys)
                self.keys[table] = self._pos(start)
            else:
                keys = self._key()
                path = table + keys
                for n in range(len(table) + 1, len(path) + 1):
                    self.keys.setdefault(path[:n], self._pos(start))
                self.keys[path] = self._pos(start)
                self._skip_ws()
                self._i += 1  # '='
                self._skip_ws()
                self._value(path)

    def _resolve(self, keys: tuple[str, ...]) -> Path:
        """A header path, with arrays of tables replaced by their last element."""
        out: Path = ()
        for k in keys:
            out = out + (k,)
            if out in self._arrays:
                out = out + (self._arrays[out] - 1,)
        return out

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip_ws()
            c = self._peek()
            if c == '"':
                parts.append(self._basic_string())
            elif c == "'":
                parts.append(self._literal_string())
            else:
                start = self._i
                while self._i < len(self._text) and self._text[self._i] in _BARE:
                    self._i += 1
                parts.append(self._text[start : self._i])
            self._skip_ws()
            if self._peek() == ".":
                self._i += 1
                continue
            return tuple(parts)

    def _basic_string(self) -> str:
        t = self._text
        self._i += 1
        out: list[str] = []
        while t[self._i] != '"':
            c = t[self._i]
            if c == "\\":
                nxt = t[self._i + 1]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                    self._i += 2
                elif nxt in "uU":
                    width = 4 if nxt == "u" else 8
                    out.append(chr(int(t[self._i + 2 : self._i + 2 + width], 16)))
                    self._i += 2 + width
                else:
                    self._i += 2
            else:
                out.append(c)
                self._i += 1
        self._i += 1
        return "".join(out)

    def _literal_string(self) -> str:
        end = self._text.index("'", self._i + 1)
        s = self._text[self._i + 1 : end]
        self._i = end + 1
        return s

    def _value(self, path: Path) -> None:
        t = self._text
        self.values[path] = self._pos(self._i)
        if t.startswith('"""', self._i) or t.startswith("'''", self._i):
            quote = t[self._i : self._i + 3]
            end = t.index(quote, self._i + 3)
            # A closing delimiter may be followed by up to two more quotes.
            while t.startswith(quote[0], end + 3):
                end += 1
            self._i = end + 3
        elif t[self._i] == '"':
            self._basic_string()
        elif t[self._i] == "'":
            self._literal_string()
        elif t[self._i] == "[":
            self._i += 1
            for index in _count():
                self._skip_ws_comments_newlines()
                if t[self._i] == "]":
                    break
                self._value(path + (index,))
                self._skip_ws_comments_newlines()
                if t[self._i] == ",":
                    self._i += 1
            self._i += 1
        elif t[self._i] == "{":
            self._i += 1
            while True:
                self._skip_ws()
                if t[self._i] == "}":
                    break
                key_start = self._i
                keys = self._key()
                sub = path + keys
                self.keys[sub] = self._pos(key_start)
                self._skip_ws()
                self._i += 1  # '='
                self._skip_ws()
                self._value(sub)
                self._skip_ws()
                if t[self._i] == ",":
                    self._i += 1
            self._i += 1
        else:
            while self._i < len(t) and t[self._i] not in ",]}\n#":
                self._i += 1


def _count() -> Iterator[int]:
    n = 0
    while True:
        yield n
        n += 1
