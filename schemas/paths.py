"""Field paths of the source registry: dotted keys, list indexes and `[*]` wildcards.

`a.b`, `a.-1.b` and `a[-1].b` name one value; `Body.WaybillRoute[*]` names every
element of a list. A source's `each:` path (ending in `[*]`) splits a notification into
events; a `[*]` in one of its field paths is bound to the current element of the same
wildcard of `each` (so `shipments[*].id` is the shipment's id for each of its
`shipments[*].events[*]`). Parsing and the binding rule live here, shared by the
configuration (which refuses a bad path at load, naming the key) and the normalizer
(which compiles each path once).
"""

from __future__ import annotations

import re

__all__ = ["WILD", "PathError", "bind", "each_steps", "groups", "parse"]

WILD = "[*]"
"""The wildcard token in a parsed path (a key is never this text: `[` is not a key char)."""

Token = str | int
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\*|-?[0-9]+)\]")
_INT = re.compile(r"-?[0-9]+")


class PathError(ValueError):
    """A path that does not parse, or whose wildcards do not follow `each`."""


def parse(path: str) -> tuple[Token, ...]:
    """`a.b[*].-1` -> ("a", "b", WILD, -1). Integer segments index lists (dicts by text)."""
    if not isinstance(path, str) or not path:
        raise PathError("a path is a non-empty string")
    tokens: list[Token] = []
    pos = 0
    expect_key = True  # at the start or after a dot
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise PathError(f"{path!r}: unexpected {path[pos]!r} at {pos}")
        key, index = m.groups()
        if key is not None:
            if not expect_key:
                raise PathError(f"{path!r}: a key must follow a dot")
            tokens.append(int(key) if _INT.fullmatch(key) else key)
        else:
            if expect_key:
                raise PathError(f"{path!r}: [{index}] must follow a key")
            tokens.append(WILD if index == "*" else int(index))
        pos = m.end()
        expect_key = False
        if pos < len(path) and path[pos] == ".":
            pos += 1
            expect_key = True
            if pos == len(path):
                raise PathError(f"{path!r}: ends with a dot")
    return tuple(tokens)


def groups(path: str) -> list[tuple[Token, ...]]:
    """The segments between wildcards: `a[*].b[*].c` -> [(a,), (b,), (c,)]."""
    out: list[tuple[Token, ...]] = [()]
    for t in parse(path):
        if t == WILD:
            out.append(())
        else:
            out[-1] = (*out[-1], t)
    return out


def bind(path: str, each: str | None) -> tuple[int, tuple[Token, ...]]:
    """(level, tail): the path read from the element of its last wildcard.

    Level 0 is the payload's root; level k is the current element of `each`'s k-th `[*]`.
    A path's wildcards must repeat `each`'s prefix (so that they can be bound).
    """
    g = groups(path)
    level = len(g) - 1
    if level == 0:
        return 0, g[0]
    if each is None:
        raise PathError(f"{path!r}: a [*] in a field path needs the source's `each:`")
    e = groups(each)
    if level > len(e) - 1 or g[:level] != e[:level]:
        raise PathError(
            f"{path!r}: its [*] must repeat the start of `each` ({each!r}), "
            "so that it is read from the current element"
        )
    return level, g[level]


def each_steps(each: str) -> list[tuple[Token, ...]]:
    """`each`'s segments from one level to the list of the next; it must end with [*]."""
    g = groups(each)
    if len(g) < 2:
        raise PathError(f"{each!r}: `each` names a list with [*] (like Body.WaybillRoute[*])")
    if g[-1]:
        raise PathError(f"{each!r}: `each` must end with [*]")
    if any(not step for step in g[:-1]):
        raise PathError(f"{each!r}: every [*] of `each` must follow a key")
    return g[:-1]
