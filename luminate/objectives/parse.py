"""Objectives from text: :func:`as_objective` and the expression parser :func:`parse`.

``"blocks.9:7"`` is ``channel("blocks.9", 7)``, ``"class:daisy"`` is ``class_logit("daisy")``, and shorthands combine
with numbers, ``+ - * /``, unary minus and parentheses: ``"-blocks.10:7 + 0.5*blocks.10:11"``. A tokenizer and a
recursive-descent parser; never ``eval``.
"""

from __future__ import annotations

import re
from typing import Iterable

from luminate.objectives.catalogue import channel, class_logit
from luminate.objectives.core import Objective, _is_number


def as_objective(obj, layers: Iterable[str] | None = None) -> Objective:
    """An :class:`Objective` from an Objective (as is), a string (``"blocks.9:7"`` -> ``channel``,
    ``"class:daisy"`` -> ``class_logit``, or any :func:`parse` expression), or a callable ``acts -> [B]`` (give
    the ``layers`` it reads)."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        return parse(obj)
    if callable(obj):
        if layers is None:
            raise TypeError("as_objective(callable) needs layers=[...], the layer names the callable reads")
        return Objective(obj, layers, getattr(obj, "__name__", None))
    raise TypeError(f"cannot make an objective from {type(obj).__name__}; give an Objective, a string like "
                    "'blocks.9:7' or 'class:daisy', or a callable with layers=")


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<unit>(?P<layer>[A-Za-z0-9_][\w.]*(?:\#\d+)?)\s*:\s*(?P<spec>"[^"]*"|'[^']*'|[\w]+))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op>[-+*/()])
""", re.VERBOSE)


class ObjectiveSyntaxError(ValueError):
    """A malformed objective expression (the message points at the problem)."""


def parse(expression: str) -> Objective:
    """An objective from a small expression: shorthands, numbers, ``+ - * /``, unary minus, parentheses.

    Shorthands: ``layer:7`` is ``channel("layer", 7)``; ``class:daisy`` / ``class:985`` /
    ``class:"tiger cat"`` is ``class_logit(...)`` (an unquoted ``_`` may stand for a space). Examples:
    ``"-blocks.10:7 + 0.5*blocks.10:11"``, ``"(blocks.9:1 - blocks.9:2) / 2"``. No ``eval``: a tokenizer and a
    recursive-descent parser.
    """
    if not isinstance(expression, str):
        raise TypeError(f"parse() takes a string, got {type(expression).__name__}")
    tokens = _tokenize(expression)
    parser = _Parser(expression, tokens)
    value = parser.expr()
    if parser.i < len(tokens):
        parser.fail("unexpected", tokens[parser.i])
    if not isinstance(value, Objective):
        raise ObjectiveSyntaxError(f"{expression!r} has no objective in it; use shorthands like 'blocks.9:7' "
                                   "or 'class:daisy'")
    return value


def _tokenize(text: str) -> list[tuple[str, object, int]]:
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ObjectiveSyntaxError(f"cannot read {text!r} at position {pos}:\n  {text}\n  {' ' * pos}^\n"
                                       + (_hint(text, pos, tokens) or "expected a shorthand like 'blocks.9:7' or "
                                          "'class:daisy', a number, + - * / or parentheses"))
        kind = m.lastgroup if m.lastgroup in ("space", "number", "op") else "unit"
        if kind == "number":
            tokens.append(("number", float(m.group("number")), pos))
        elif kind == "op":
            tokens.append(("op", m.group("op"), pos))
        elif kind == "unit":
            tokens.append(("unit", _shorthand(m.group("layer"), m.group("spec"), text, pos), pos))
        pos = m.end()
    return tokens


def _hint(text: str, pos: int, tokens: list) -> str | None:
    """What the text at ``pos`` probably meant, for the common mistakes (None: no idea)."""
    rest = text[pos:]
    call = re.match(r"(\w+)\s*\(\s*['\"]?([\w.#]+)['\"]?\s*,\s*(\d+)\s*\)", rest)
    if call:
        return (f"{call.group(0)} is Python syntax; on the command line write '{call.group(2)}:{call.group(3)}' "
                f"(in Python: obj.{call.group(1)}({call.group(2)!r}, {call.group(3)}))")
    call = re.match(r"class_logit\s*\(\s*['\"]?([^'\")]+?)['\"]?\s*\)", rest)
    if call:
        return f"{call.group(0)} is Python syntax; on the command line write 'class:{call.group(1)}'"
    negative = re.match(r"([A-Za-z_][\w.#]*)\s*:\s*-\s*(\d+)", rest)
    if negative:
        layer, n = negative.groups()
        return (f"channel indices count from 0 and cannot be negative ({layer}:-{n}); `luminate layers MODEL` "
                f"shows how many channels {layer} has. For the negative image of a channel put the minus in front: "
                f"'-{layer}:{n}'")
    word = re.match(r"[A-Za-z_][\w]*", rest)
    previous = tokens[-1] if tokens else None
    if word and previous is not None and previous[0] == "unit" and text[previous[2]:].startswith("class"):
        words = re.match(r"class\s*:\s*([\w ]+)", text[previous[2]:]).group(1).strip()
        return (f"class names with spaces need quotes or underscores: class:\"{words}\" (quote the whole "
                f"objective for the shell: 'class:\"{words}\"') or class:{words.replace(' ', '_')}")
    if word and (pos + word.end() >= len(text) or not text[pos + word.end():].lstrip().startswith((":", "."))):
        return (f"{word.group(0)!r} alone is not an objective: a class is written 'class:{word.group(0)}', a "
                f"channel 'LAYER:INDEX' as in 'blocks.9:7'")
    return None


def _shorthand(layer: str, spec: str, text: str, pos: int) -> Objective:
    quoted = spec[:1] in "'\"" and len(spec) >= 2
    if layer == "class":
        return class_logit(spec[1:-1] if quoted else spec)
    if quoted or not spec.isdigit():
        import difflib

        if "." not in layer and difflib.get_close_matches(layer.lower(), ["class"], n=1, cutoff=0.6):
            raise ObjectiveSyntaxError(f"in {text!r} at position {pos}: unknown kind {layer!r}: did you mean "
                                       f"'class:{spec}'? (a class is 'class:NAME', a channel 'LAYER:INDEX')")
        raise ObjectiveSyntaxError(f"in {text!r} at position {pos}: {layer}:{spec} needs a channel index "
                                   f"(an integer), as in '{layer}:7'")
    return channel(layer, int(spec))


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := ('-'|'+') unary | atom."""

    def __init__(self, text: str, tokens: list):
        self.text, self.tokens, self.i = text, tokens, 0

    def fail(self, what: str, token=None):
        if token is None:
            raise ObjectiveSyntaxError(f"{self.text!r} ends too early: expected a shorthand, a number or '('")
        pos = token[2]
        raise ObjectiveSyntaxError(f"{what} {token[1] if token[0] != 'unit' else token[1].name!s} in "
                                   f"{self.text!r} at position {pos}:\n  {self.text}\n  {' ' * pos}^")

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take_op(self, ops: str):
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ops:
            self.i += 1
            return t
        return None

    def expr(self):
        value = self.term()
        while (t := self.take_op("+-")) is not None:
            rhs = self.term()
            value = value + rhs if t[1] == "+" else value - rhs
        return value

    def term(self):
        value = self.unary()
        while (t := self.take_op("*/")) is not None:
            rhs = self.unary()
            if t[1] == "/" and not isinstance(rhs, Objective) and rhs == 0:
                raise ObjectiveSyntaxError(f"division by zero in {self.text!r} at position {t[2]}")
            if t[1] == "/" and _is_number(value) and isinstance(rhs, Objective):
                raise ObjectiveSyntaxError(f"cannot divide a number by an objective in {self.text!r} "
                                           f"(position {t[2]})")
            value = value * rhs if t[1] == "*" else value / rhs
        return value

    def unary(self):
        t = self.take_op("+-")
        if t is not None:
            value = self.unary()
            return -value if t[1] == "-" else value
        return self.atom()

    def atom(self):
        t = self.peek()
        if t is None:
            self.fail("")
        self.i += 1
        if t[0] in ("number", "unit"):
            return t[1]
        if t[1] == "(":
            value = self.expr()
            if self.take_op(")") is None:
                nxt = self.peek()
                if nxt is None:
                    raise ObjectiveSyntaxError(f"unclosed '(' in {self.text!r} at position {t[2]}")
                self.fail("expected ')' but found", nxt)
            return value
        self.fail("unexpected", t)
