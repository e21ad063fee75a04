"""Label and field selectors, parsed and matched as the Kubernetes API server does.

Owns the selector grammar (`app=x,tier!=db,env in (a,b),!legacy`), field selectors
(`metadata.name=x`) and `LabelSelector` objects (`matchLabels`/`matchExpressions`)
as found in Deployments. Which fields a resource supports is passed in by the
caller; this module knows nothing about resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that does not parse; the API server answers 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator (=, !=, in, notin, exists, !) and values."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        raise SelectorError(f"unknown operator {self.op!r}")


_KEY = re.compile(
    r"([a-z0-9A-Z]([a-z0-9A-Z.-]*[a-z0-9A-Z])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?")
_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),=!]+)")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(
            f'unable to parse requirement: Invalid value: "{key}": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )
    return key


def _check_value(value: str) -> str:
    if not _VALUE.fullmatch(value) or len(value) > 63:
        raise SelectorError(
            f'unable to parse requirement: Invalid value: "{value}": a valid label must be an '
            "empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise SelectorError(f"unable to parse requirement: unexpected end of {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while self.peek() is not None:
            requirements.append(self.requirement())
            token = self.peek()
            if token is None:
                break
            if token != ",":
                raise SelectorError(f"found '{token}', expected: ',' or 'end of string'")
            self.take()
            if self.peek() is None:
                raise SelectorError("found '', expected: !, identifier, or 'end of string'")
        return requirements

    def requirement(self) -> Requirement:
        token = self.take()
        if token == "!":
            return Requirement(_check_key(self.take()), "!")
        key = _check_key(token)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        self.take()
        if op in ("=", "=="):
            return Requirement(key, "=", (self.value(),))
        if op == "!=":
            return Requirement(key, "!=", (self.value(),))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        raise SelectorError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")

    def value(self) -> str:
        token = self.peek()
        if token is None or token == ",":
            return ""
        return _check_value(self.take())

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise SelectorError("found '', expected: '('")
        values: list[str] = []
        while True:
            token = self.take()
            if token == ")":
                return tuple(values)
            if token == ",":
                continue
            values.append(_check_value(token))


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse `app=x,env in (a,b),!old`; an empty or missing selector matches everything."""
    if not text:
        return []
    return _Parser(text).parse()


def labels_match(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


def label_selector_matches(selector: Mapping[str, Any] | None,
                           labels: Mapping[str, str] | None) -> bool:
    """Match a `LabelSelector` object (`matchLabels`, `matchExpressions`), e.g. a Deployment's."""
    labels = labels or {}
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        req = Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """Render a `LabelSelector` object as a selector string (`app=x,env in (a,b)`)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(expr.get("values") or ())
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


FieldGetter = Callable[[Mapping[str, Any]], str | None]


def _path_getter(path: str) -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str | None:
        node: Any = obj
        for part in path.split("."):
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
        return None if node is None else str(node)
    return get


def parse_field_selector(text: str | None, supported: Iterable[str]) -> list[FieldRequirement]:
    """Parse `metadata.name=x,metadata.namespace!=y` against the fields a resource supports."""
    if not text:
        return []
    allowed = set(supported)
    requirements: list[FieldRequirement] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.groups()
        if field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        requirements.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
    return requirements


def fields_match(requirements: Iterable[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for req in requirements:
        actual = _path_getter(req.field)(obj) or ""
        if (actual == req.value) != (req.op == "="):
            return False
    return True
