"""Consul's `?filter=` expressions (the go-bexpr language), evaluated on the JSON shapes we return.

    Expression  := Or
    Or          := And ("or" And)*
    And         := Not ("and" Not)*
    Not         := "not" Not | "(" Expression ")" | Match
    Match       := Selector ("==" | "!=") Value
                 | Selector "is" ["not"] "empty"
                 | Value ["not"] "in" Selector
                 | Selector ["not"] ("contains" | "matches") Value
    Selector    := Name ("." Name | "[" String "]")*
    Value       := "double quoted" | `backquoted` | number | true | false | bare-word

A syntax error is a 400, as in Consul ("Failed to create boolean expression evaluator").
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from catalog.parsing import BadRequest

Predicate = Callable[[Any], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<op>==|!=|\(|\)|\[|\]|\.)
    | (?P<word>[A-Za-z0-9_\-:/+@*]+)
    )""", re.VERBOSE)

_KEYWORDS = {"and", "or", "not", "in", "is", "empty", "contains", "matches"}


class FilterError(BadRequest):
    pass


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"Failed to create boolean expression evaluator: unexpected {text[pos:].strip()[:20]!r} "
                              f"at position {pos}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            try:
                value = json.loads(value)
            except ValueError:
                raise FilterError(f"Failed to create boolean expression evaluator: bad string {value}") from None
        elif kind == "raw":
            kind, value = "string", value[1:-1]
        tokens.append((kind, value))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self, why: str) -> FilterError:
        return FilterError(f"Failed to create boolean expression evaluator: {why} in {self.text!r}")

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def keyword(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token[0] == "word" and token[1] == word

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end of expression")
        self.pos += 1
        return token

    def expect(self, kind: str, value: str | None = None) -> str:
        token = self.take()
        if token[0] != kind or (value is not None and token[1] != value):
            raise self.fail(f"expected {value or kind}, got {token[1]!r}")
        return token[1]

    def parse(self) -> Predicate:
        if not self.tokens:
            raise self.fail("empty expression")
        predicate = self.or_()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return predicate

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.keyword("or"):
            self.pos += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def and_(self) -> Predicate:
        parts = [self.not_()]
        while self.keyword("and"):
            self.pos += 1
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def not_(self) -> Predicate:
        if self.keyword("not") and not self.keyword("in", 1):
            self.pos += 1
            inner = self.not_()
            return lambda item: not inner(item)
        if self.peek() == ("op", "("):
            self.pos += 1
            inner = self.or_()
            self.expect("op", ")")
            return inner
        return self.match()

    def match(self) -> Predicate:
        # `Value [not] in Selector`
        for offset in (1, 2):
            if self.keyword("in", offset) and (offset == 1 or self.keyword("not", 1)):
                value = self.value()
                negate = offset == 2
                self.pos += offset
                selector = self.selector()
                return _negate(lambda item: _contains(_select(item, selector), value), negate)
        selector = self.selector()
        token = self.take()
        if token == ("op", "=="):
            value = self.value()
            return lambda item: _equals(_select(item, selector), value)
        if token == ("op", "!="):
            value = self.value()
            return lambda item: not _equals(_select(item, selector), value)
        if token == ("word", "is"):
            negate = self.keyword("not")
            if negate:
                self.pos += 1
            self.expect("word", "empty")
            return _negate(lambda item: _empty(_select(item, selector)), negate)
        negate = token == ("word", "not")
        if negate:
            token = self.take()
        if token == ("word", "contains"):
            value = self.value()
            return _negate(lambda item: _contains(_select(item, selector), value), negate)
        if token == ("word", "matches"):
            pattern = self.value()
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise self.fail(f"invalid regular expression {pattern!r}: {exc}") from None
            return _negate(lambda item: isinstance(_select(item, selector), str)
                           and regex.search(_select(item, selector)) is not None, negate)
        raise self.fail(f"expected an operator after selector, got {token[1]!r}")

    def selector(self) -> list[str]:
        kind, name = self.take()
        if kind != "word" or name in _KEYWORDS:
            raise self.fail(f"expected a selector, got {name!r}")
        path = [name]
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take() == ("op", "."):
                path.append(self.expect("word"))
            else:
                path.append(self.expect("string"))
                self.expect("op", "]")
        return path

    def value(self) -> str:
        kind, value = self.take()
        if kind not in ("string", "word") or (kind == "word" and value in _KEYWORDS):
            raise self.fail(f"expected a value, got {value!r}")
        return value


def _negate(predicate: Predicate, negate: bool) -> Predicate:
    return (lambda item: not predicate(item)) if negate else predicate


def _select(item: Any, path: list[str]) -> Any:
    for name in path:
        if not isinstance(item, dict):
            return None
        if name in item:
            item = item[name]
            continue
        folded = {k.lower(): k for k in item}
        if name.lower() not in folded:
            return None
        item = item[folded[name.lower()]]
    return item


def _equals(actual: Any, expected: str) -> bool:
    if isinstance(actual, bool):
        wanted = expected.lower()
        if wanted in ("true", "t", "1"):
            return actual
        return not actual if wanted in ("false", "f", "0") else False
    if isinstance(actual, (int, float)):
        try:
            return actual == float(expected)
        except ValueError:
            return False
    if actual is None:
        return expected == ""
    return isinstance(actual, str) and actual == expected


def _contains(container: Any, value: str) -> bool:
    if isinstance(container, (list, dict)):
        return value in container
    if isinstance(container, str):
        return value in container
    return False


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def compile_filter(expression: str) -> Predicate:
    return _Parser(expression).parse()


def apply_filter(data: Any, expression: str) -> Any:
    """Keep the items of a list (or the values of a map) that match `expression`; a bad expression is a 400."""
    if not expression:
        return data
    keep = compile_filter(expression)
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if keep(value)}
    return [item for item in data if keep(item)]
