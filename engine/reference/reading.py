"""Reading a request as the reference does, plainly (docs/contract.md section 7, v2).

The depth of a JSON body from its raw text (brackets outside strings, so a
duplicate key that a decoder drops still counts), the depth of a decoded
value, and whether a text is a time a request may name.
"""
from __future__ import annotations

from engine.contract import money
from engine.contract.protocol import REQUEST_DAY_MAX, REQUEST_DAY_MIN


def not_json(name: str) -> object:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259); Python's json would read them."""
    raise ValueError(f"{name} is not JSON")


def raw_json_depth(body: bytes) -> int:
    """How deeply JSON text nests, read from its brackets outside strings (duplicate keys included)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in body:
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return deepest


def request_time_ok(text: str) -> bool:
    """A time of a request: YYYY-MM-DD HH:MM:SS within 2000-2099 (section 7, v2)."""
    try:
        return REQUEST_DAY_MIN <= money.parse_time_day(text) <= REQUEST_DAY_MAX
    except money.NumberError:
        return False


def nesting_depth(value: object) -> int:
    """How many arrays and objects enclose the deepest value (the envelope itself counts one)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((x, depth) for x in v)
    return deepest
