"""Typed checks of config values, each raising `ConfigError` that names the key and why.

`Checker(prefix)` knows where in the config document it is (`apps.myapp`), so
`checker.positive("x", "rollout_timeout")` fails with
`apps.myapp.rollout_timeout: must be a positive number, got 'x'`. What the keys
mean is left to `worker.appconfig` and `worker.config`.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any


class ConfigError(Exception):
    """Invalid configuration; the message names the key and says why."""


class Checker:
    """Checks values found under one prefix of the config document."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if key else self.prefix

    def fail(self, key: str, why: str, value: object) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {why}, got {_show(value)}")

    def mapping(self, value: Any, key: str,
                allowed: frozenset[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping", value)
        if allowed is not None:
            unknown = sorted(str(k) for k in value if k not in allowed)
            if unknown:
                raise ConfigError(f"{self.where(_join(key, unknown[0]))}: unknown key "
                                  f"(allowed: {', '.join(sorted(allowed))})")
        return {str(k): v for k, v in value.items()}

    def sequence(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, "must be a list", value)
        return value

    def text(self, value: Any, key: str, *, pattern: re.Pattern[str] | None = None,
             hint: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"must be {hint or 'a string matching ' + pattern.pattern}",
                            value)
        return value.strip()

    def optional_text(self, value: Any, key: str) -> str | None:
        return None if value is None else self.text(value, key)

    def text_list(self, value: Any, key: str) -> tuple[str, ...]:
        return tuple(self.text(item, f"{key}[{i}]")
                     for i, item in enumerate(self.sequence(value, key)))

    def scalar(self, value: Any, key: str) -> str:
        """A string, or a number written without quotes (`5432`), as a string."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, "must be a string or a number", value)
        return str(value)

    def positive(self, value: Any, key: str) -> float:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or value <= 0:
            raise self.fail(key, "must be a positive number", value)
        return float(value)

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number from {low} to {high}", value)
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def regex(self, value: Any, key: str) -> re.Pattern[str]:
        source = self.text(value, key)
        try:
            return re.compile(source)
        except re.error as e:
            raise self.fail(key, f"is not a valid regular expression ({e})", value) from e

    def command(self, value: Any, key: str) -> tuple[str, ...]:
        """A command as a list of arguments, or one string split as a shell would."""
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as e:
                raise self.fail(key, f"cannot be split into arguments ({e})", value) from e
        args = self.sequence(value, key)
        if not args or not all(isinstance(arg, str) and arg for arg in args):
            raise self.fail(key, "must be a non-empty list of non-empty strings", value)
        return tuple(args)


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _show(value: object) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"
