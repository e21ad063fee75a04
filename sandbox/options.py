"""The options of a write, checked as the real handlers check them before anything else.

Owns CreateOptions, UpdateOptions, PatchOptions and DeleteOptions as
staging/src/k8s.io/apiserver/pkg/endpoints/handlers validate them (apimachinery's
ValidateCreateOptions and its siblings): every problem goes into one 422 `Invalid` on
the options kind, e.g. `CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported
value: []string{"Bogus"}: supported values: "All"`, several as `[..., ...]`.

- `dryRun` may only hold `All` (any number of times); present, nothing is persisted;
- `fieldValidation` is "", `Ignore`, `Strict` or `Warn` (Warn when unset);
- `propagationPolicy` is `Foreground`, `Background` or `Orphan`, and not given together
  with the deprecated `orphanDependents` (which stands for Orphan or Background).

Where the options come from (the query, or a DELETE's body) is the verbs' business.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.resources import ApiError, cause_reason

DIRECTIVES = ("Ignore", "Strict", "Warn")
POLICIES = ("Background", "Foreground", "Orphan")
Problem = tuple[str, str]  # (field, what is wrong with it)


@dataclass(frozen=True)
class WriteOptions:
    dry_run: bool
    field_validation: str  # the directive: Ignore, Strict or Warn


@dataclass(frozen=True)
class DeleteOptions:
    dry_run: bool
    propagation: str | None  # Foreground, Background, Orphan, or None for the default
    orphan: bool | None  # `orphanDependents` as given (it decides between 200 and 202)
    preconditions: Mapping[str, Any]


def invalid(options: str, problems: list[Problem]) -> ApiError:
    """The 422 naming each (field, problem) of the options, as field.ErrorList words it."""
    text = ", ".join(f"{field}: {problem}" for field, problem in problems)
    if len(problems) > 1:
        text = f"[{text}]"
    causes = [{"reason": cause_reason(problem), "message": problem, "field": field}
              for field, problem in problems]
    return ApiError(422, "Invalid", f'{options}.meta.k8s.io "" is invalid: {text}',
                    {"group": "meta.k8s.io", "kind": options, "causes": causes})


def write_options(options: str, query: Mapping[str, list[str]],
                  problems: Iterable[Problem] = ()) -> WriteOptions:
    """Create, update and patch options from the query; `problems` are the verb's own
    (they come first, as in ValidatePatchOptions)."""
    found = [*problems, *_dry_run_problems(query.get("dryRun"))]
    directive = (query.get("fieldValidation") or [""])[0]
    if directive not in ("", *DIRECTIVES):
        supported = ", ".join(f'"{v}"' for v in ("", *DIRECTIVES))
        found.append(("fieldValidation",
                      f'Unsupported value: "{directive}": supported values: {supported}'))
    if found:
        raise invalid(options, found)
    return WriteOptions(bool(query.get("dryRun")), directive or "Warn")


def delete_options(options: Mapping[str, Any]) -> DeleteOptions:
    """DeleteOptions as decoded from the body or the query (ValidateDeleteOptions)."""
    policy, orphan = options.get("propagationPolicy"), options.get("orphanDependents")
    found: list[Problem] = []
    if policy is not None and orphan is not None:
        found.append(("propagationPolicy", f'Invalid value: "{policy}": orphanDependents and '
                      "deletionPropagation cannot be both set"))
    if policy is not None and policy not in POLICIES:
        supported = '"Foreground", "Background", "Orphan", "nil"'
        found.append(("propagationPolicy",
                      f'Unsupported value: "{policy}": supported values: {supported}'))
    found += _dry_run_problems(options.get("dryRun"))
    if found:
        raise invalid("DeleteOptions", found)
    if orphan is not None:
        policy = "Orphan" if orphan else "Background"
    return DeleteOptions(bool(options.get("dryRun")), policy, orphan,
                         options.get("preconditions") or {})


def _dry_run_problems(values: list[str] | None) -> list[Problem]:
    if not values or all(v == "All" for v in values):
        return []
    shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in values)  # Go's %#v
    return [("dryRun", f'Unsupported value: []string{{{shown}}}: supported values: "All"')]
