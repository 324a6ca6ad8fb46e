"""Fields that hold JSON or XML text (J&T `bizContent`, SF `msgData`), decoded to objects.

XML becomes what its JSON twin would be, so one set of paths reads both: the root
element's content is the value (its tag is dropped: SF's `<Request><Body>...` reads as
`Body...`, like its JSON form); attributes and child elements are keys (a child wins
over an attribute of the same name); a repeated child is a list; an element with only
text is that text; text beside attributes or children is `#text`. Namespaces are
dropped from tags. A DOCTYPE is refused outright: without one no entity can be
declared, so no entity expansion (billion laughs) and no external fetch can happen;
expat does the parsing and never resolves external entities anyway.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import orjson

__all__ = ["DecodeError", "decode"]

_DEPTH_MAX = 64  # XML nesting: no real notification comes close; recursion stays bounded


class DecodeError(ValueError):
    """Text that is not what the configuration says it holds (the message says why)."""


def decode(text: str, fmt: str) -> dict[str, Any] | list[Any]:
    """`text` decoded as `fmt` (json or xml): an object or an array, else DecodeError."""
    value = _json(text) if fmt == "json" else _xml(text)
    if type(value) not in (dict, list):
        raise DecodeError(f"decodes to {type(value).__name__}, not an object or an array")
    return value


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"not JSON: {e}") from None


def _xml(text: str) -> Any:
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise DecodeError("XML with a DOCTYPE or an entity declaration is refused")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise DecodeError(f"not XML: {e}") from None
    value = _element(root, 0)
    return value if type(value) is dict else {"#text": value}


def _tag(tag: str) -> str:
    return tag.rpartition("}")[2]  # "{urn:x}Body" -> "Body"


def _element(el: ElementTree.Element, depth: int) -> Any:
    if depth > _DEPTH_MAX:
        raise DecodeError(f"XML nested deeper than {_DEPTH_MAX} elements")
    children: dict[str, list[Any]] = {}
    for child in el:
        children.setdefault(_tag(child.tag), []).append(_element(child, depth + 1))
    obj: dict[str, Any] = {k: v for k, v in el.attrib.items() if _tag(k) not in children}
    obj = {_tag(k): v for k, v in obj.items()}
    for tag, values in children.items():
        obj[tag] = values[0] if len(values) == 1 else values
    text = (el.text or "").strip()
    if not obj:
        return text
    if text:
        obj["#text"] = text
    return obj
