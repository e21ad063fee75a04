"""Validation on every write: the 422 Invalid answers of the real server's strategies.

Owns the checks of pkg/apis/core/validation, pkg/apis/apps/validation and
apimachinery's ObjectMeta validation that clients meet in practice, worded as
they word them (k8s.io/apimachinery/pkg/util/validation messages), one cause per
field in error, metadata first:

- names: a DNS-1123 subdomain for most kinds, a DNS-1123 label for Namespaces, a
  DNS-1035 label for Services; label keys (qualified names) and values, annotation
  keys, for every kind and every verb (patches included);
- pod specs (Pods and workload templates): containers required, each named with a
  unique DNS-1123 label and given an image, container ports in range and uniquely
  named, restartPolicy and imagePullPolicy among the supported values;
- Deployments and ReplicaSets: replicas not negative, a non-empty selector matching
  the template's labels and, on update, unchanged (immutable in apps/v1),
  restartPolicy Always; a Deployment's strategy (type, `rollingUpdate` only with
  RollingUpdate, the fences), minReadySeconds, revisionHistoryLimit and
  progressDeadlineSeconds;
- Services: ports required unless headless or ExternalName, each port in range,
  named when there are several, names and numbers unique; the type supported.

Field types were checked before, by `sandbox.decoding`; defaults by
`sandbox.defaults`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox.resources import ResourceType, invalid
from sandbox.selectors import label_selector_matches

Obj = dict[str, Any]
Errors = list[tuple[str, str]]

# Used with fullmatch: Go's `^...$` ends at the end of the string, Python's `$` would also
# match before a final newline ("web\n").
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[-a-z0-9]+")
_PORT_NAME_LETTER = re.compile(r"[a-z]")
_PERCENT = re.compile(r"[0-9]+%")
_PORT_RANGE = "must be between 1 and 65535, inclusive"


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """validation.RegexError, double spaces before `or` included."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def is_subdomain(value: str) -> list[str]:
    errors = [_max_len(253)] if len(value) > 253 else []
    if not _SUBDOMAIN.fullmatch(value):
        errors.append(_regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character",
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", "example.com"))
    return errors


def is_dns1123_label(value: str) -> list[str]:
    errors = [_max_len(63)] if len(value) > 63 else []
    if not _LABEL_1123.fullmatch(value):
        errors.append(_regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?", "my-name", "123-abc"))
    return errors


def is_dns1035_label(value: str) -> list[str]:
    errors = [_max_len(63)] if len(value) > 63 else []
    if not _LABEL_1035.fullmatch(value):
        errors.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?", "my-name", "abc-123"))
    return errors


def is_qualified_name(value: str) -> list[str]:
    """IsQualifiedName: `[prefix/]name`, as label keys and annotation keys must be."""
    qualified = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                 "and end with an alphanumeric character")
    fmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) > 2:
        return ["a qualified name " + _regex_error(qualified, fmt, "MyName", "my.name",
                                                   "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errors.append("prefix part must be non-empty")
        else:
            errors += ["prefix part " + m for m in is_subdomain(parts[0])]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part " + _max_len(63))
    if not _QUALIFIED.fullmatch(name):
        errors.append("name part " + _regex_error(qualified, fmt, "MyName", "my.name",
                                                  "123-abc"))
    return errors


def is_label_value(value: str) -> list[str]:
    errors = [_max_len(63)] if len(value) > 63 else []
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(_regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", "MyValue", "my_value", "12345"))
    return errors


def _quoted(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _invalid(value: Any, message: str) -> str:
    return f"Invalid value: {_quoted(value) if isinstance(value, str) else value}: {message}"


def _go_map(labels: Any) -> str:
    shown = ", ".join(f"{_quoted(k)}:{_quoted(v)}" for k, v in sorted((labels or {}).items()))
    return f"map[string]string{{{shown}}}"


def _selector_shape(selector: Any) -> Any:
    """A LabelSelector as apiequality.Semantic.DeepEqual compares it: a nil and an empty
    slice or map are equal, and so are an absent and an empty string field."""
    if not isinstance(selector, dict):
        return selector
    expressions = [(e.get("key") or "", e.get("operator") or "", list(e.get("values") or []))
                   if isinstance(e, dict) else e for e in selector.get("matchExpressions") or []]
    return selector.get("matchLabels") or {}, expressions


def _go_selector(selector: Any) -> str:
    """`%#v` of a *metav1.LabelSelector, as an immutable-field error prints it."""
    selector = selector or {}
    expressions = selector.get("matchExpressions")
    shown = "[]v1.LabelSelectorRequirement(nil)" if not expressions else (
        "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{_quoted(e.get('key', ''))}, "
            f"Operator:{_quoted(e.get('operator', ''))}, Values:[]string{{"
            + ", ".join(_quoted(v) for v in e.get("values") or []) + "}}"
            for e in expressions) + "}")
    labels = selector.get("matchLabels")
    return (f"&v1.LabelSelector{{MatchLabels:"
            f"{_go_map(labels) if labels else 'map[string]string(nil)'}, "
            f"MatchExpressions:{shown}}}")


def _not_supported(value: Any, supported: tuple[str, ...]) -> str:
    options = ", ".join(_quoted(s) for s in supported)
    return f"Unsupported value: {_quoted(value)}: supported values: {options}"


# ---- metadata -------------------------------------------------------------------------------

def validate_labels(labels: Any, path: str) -> Errors:
    errors: Errors = []
    for key, value in sorted((labels or {}).items()):
        errors += [(path, _invalid(key, m)) for m in is_qualified_name(str(key))]
        errors += [(path, _invalid(value, m)) for m in is_label_value(str(value))]
    return errors


def _validate_meta(rt: ResourceType, meta: Obj) -> Errors:
    name = str(meta.get("name") or "")
    check = (is_dns1123_label if rt.kind == "Namespace"
             else is_dns1035_label if rt.kind == "Service" else is_subdomain)
    errors: Errors = [("metadata.name", _invalid(name, m)) for m in check(name)]
    errors += validate_labels(meta.get("labels"), "metadata.labels")
    for key in sorted(meta.get("annotations") or {}):
        errors += [("metadata.annotations", _invalid(key, m))
                   for m in is_qualified_name(str(key).lower())]
    size = sum(len(k) + len(str(v)) for k, v in (meta.get("annotations") or {}).items())
    if size > 256 * 1024:
        errors.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
    return errors


# ---- pods -----------------------------------------------------------------------------------

def _validate_container(container: Obj, where: str, names: set[str]) -> Errors:
    errors: Errors = []
    name = container.get("name")
    if not name:
        errors.append((f"{where}.name", "Required value"))
    elif name in names:
        errors.append((f"{where}.name", f"Duplicate value: {_quoted(name)}"))
    else:
        errors += [(f"{where}.name", _invalid(name, m)) for m in is_dns1123_label(str(name))]
        names.add(str(name))
    if not container.get("image"):
        errors.append((f"{where}.image", "Required value"))
    port_names: set[str] = set()
    for index, port in enumerate(container.get("ports") or []):
        at = f"{where}.ports[{index}]"
        port_name = port.get("name")
        if port_name:
            problems = _port_name_problems(str(port_name))
            errors += [(f"{at}.name", _invalid(port_name, m)) for m in problems]
            if not problems and port_name in port_names:
                errors.append((f"{at}.name", f"Duplicate value: {_quoted(port_name)}"))
            port_names.add(str(port_name))
        number = port.get("containerPort")
        if not number:
            errors.append((f"{at}.containerPort", "Required value"))
        elif not 1 <= int(number) <= 65535:
            errors.append((f"{at}.containerPort", _invalid(number, _PORT_RANGE)))
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
        errors.append((f"{where}.imagePullPolicy",
                       _not_supported(policy, ("Always", "IfNotPresent", "Never"))))
    return errors


def _port_name_problems(name: str) -> list[str]:
    """IsValidPortName: an IANA_SVC_NAME."""
    problems = ["must be no more than 15 characters"] if len(name) > 15 else []
    if not _PORT_NAME.fullmatch(name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    if not _PORT_NAME_LETTER.search(name):
        problems.append("must contain at least one letter (a-z)")
    return problems


def validate_pod_spec(spec: Any, path: str) -> Errors:
    spec = spec if isinstance(spec, dict) else {}
    containers = spec.get("containers") or []
    errors: Errors = [] if containers else [(f"{path}.containers", "Required value")]
    names: set[str] = set()
    for index, container in enumerate(containers):
        errors += _validate_container(container, f"{path}.containers[{index}]", names)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in ("Always", "OnFailure", "Never"):
        errors.append((f"{path}.restartPolicy",
                       _not_supported(policy, ("Always", "Never", "OnFailure"))))
    return errors


# ---- workloads ----------------------------------------------------------------------------

def _non_negative(spec: Obj, key: str) -> Errors:
    value = spec.get(key)
    if isinstance(value, int) and value < 0:
        return [(f"spec.{key}", _invalid(value, "must be greater than or equal to 0"))]
    return []


def _validate_workload(spec: Obj) -> Errors:
    """ValidateDeploymentSpec / ValidateReplicaSetSpec, and the template they carry."""
    errors = _non_negative(spec, "replicas")
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        errors.append(("spec.selector", "Required value"))
    else:
        errors += validate_labels(selector.get("matchLabels"), "spec.selector.matchLabels")
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            errors.append(("spec.selector", f"Invalid value: {_go_selector(selector)}: "
                           "empty selector is invalid for deployment"))
        elif not label_selector_matches(selector, labels):
            errors.append(("spec.template.metadata.labels", f"Invalid value: {_go_map(labels)}: "
                           "`selector` does not match template `labels`"))
    errors += validate_labels(labels, "spec.template.metadata.labels")
    errors += validate_pod_spec(template.get("spec"), "spec.template.spec")
    policy = (template.get("spec") or {}).get("restartPolicy", "Always")
    if policy != "Always" and policy in ("OnFailure", "Never"):
        errors.append(("spec.template.spec.restartPolicy", _not_supported(policy, ("Always",))))
    return errors + _non_negative(spec, "minReadySeconds")


def _intstr(value: Any) -> str:
    """How Go prints an IntOrString value in a field error (`%#v` of the struct)."""
    if isinstance(value, str):
        return f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{_quoted(value)}}}"
    return f'intstr.IntOrString{{Type:0, IntVal:{value}, StrVal:""}}'


def _fence(value: Any) -> int | None:
    """An IntOrString's number (a percent's digits), None when it is not valid."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        return int(value[:-1])
    return None


def _validate_strategy(strategy: Obj) -> Errors:
    """ValidateDeploymentStrategy and ValidateRollingUpdateDeployment."""
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    path = "spec.strategy"
    if kind == "Recreate":
        if rolling is not None:
            return [(f"{path}.rollingUpdate", "Forbidden: may not be specified when strategy "
                     "`type` is 'Recreate'")]
        return []
    if kind != "RollingUpdate":
        return [(f"{path}.type", _not_supported(kind, ("Recreate", "RollingUpdate")))]
    if not isinstance(rolling, dict):
        return [(f"{path}.rollingUpdate", "Required value: this should be defaulted and never "
                 "be nil")]
    errors: Errors = []
    path += ".rollingUpdate"
    for key in ("maxUnavailable", "maxSurge"):
        value = rolling.get(key)
        if isinstance(value, str) and not _PERCENT.fullmatch(value):
            errors.append((f"{path}.{key}", f"Invalid value: {_intstr(value)}: " + _regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%", "1%", "93%")))
        elif isinstance(value, int) and value < 0:
            errors.append((f"{path}.{key}", _invalid(value, "must be greater than or equal to 0")))
    unavailable, surge = _fence(rolling.get("maxUnavailable")), _fence(rolling.get("maxSurge"))
    if unavailable == 0 and surge == 0:
        errors.append((f"{path}.maxUnavailable", f"Invalid value: "
                       f"{_intstr(rolling['maxUnavailable'])}: may not be 0 when `maxSurge` is 0"))
    value = rolling.get("maxUnavailable")
    if isinstance(value, str) and unavailable is not None and unavailable > 100:
        errors.append((f"{path}.maxUnavailable",
                       f"Invalid value: {_intstr(value)}: must not be greater than 100%"))
    return errors


def _validate_deployment(spec: Obj) -> Errors:
    errors = _validate_workload(spec)
    errors += _validate_strategy(spec.get("strategy") or {})
    errors += _non_negative(spec, "revisionHistoryLimit")
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int):
        errors += _non_negative(spec, "progressDeadlineSeconds")
        if deadline <= int(spec.get("minReadySeconds") or 0):
            errors.append(("spec.progressDeadlineSeconds",
                           _invalid(deadline, "must be greater than minReadySeconds")))
    return errors


# ---- services -----------------------------------------------------------------------------

def _validate_service(spec: Obj) -> Errors:
    kinds = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
    kind = spec.get("type", "ClusterIP")
    errors: Errors = [] if kind in kinds else [("spec.type", _not_supported(kind, kinds))]
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and kind != "ExternalName":
        errors.append(("spec.ports", "Required value"))
    names: set[str] = set()
    numbers: set[tuple[Any, Any]] = set()
    for index, port in enumerate(ports):
        at = f"spec.ports[{index}]"
        name = port.get("name")
        if not name and len(ports) > 1:
            errors.append((f"{at}.name", "Required value"))
        elif name:
            errors += [(f"{at}.name", _invalid(name, m)) for m in is_dns1123_label(str(name))]
            if name in names:
                errors.append((f"{at}.name", f"Duplicate value: {_quoted(name)}"))
            names.add(str(name))
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            errors.append((f"{at}.port", _invalid(number, _PORT_RANGE)))
        key = (number, port.get("protocol", "TCP"))
        if key in numbers:
            errors.append((at, f'Duplicate value: core.ServicePort{{Name:"", '
                           f"Protocol:{_quoted(key[1])}, AppProtocol:(*string)(nil), "
                           f"Port:{number}, TargetPort:{_intstr(0)}, NodePort:0}}"))
        numbers.add(key)
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            errors.append((f"{at}.targetPort", _invalid(target, _PORT_RANGE)))
    errors += validate_labels(spec.get("selector"), "spec.selector")
    return errors


# ---- the entry point ------------------------------------------------------------------------

def validate(rt: ResourceType, obj: Obj, old: Obj | None = None) -> None:
    """Raise ApiError 422 Invalid naming every field in error; `old` for an update."""
    meta = obj.get("metadata") or {}
    errors = _validate_meta(rt, meta)
    sent = obj.get("spec")
    spec: Obj = sent if isinstance(sent, dict) else {}
    if rt.kind == "Deployment":
        errors += _validate_deployment(spec)
    elif rt.kind == "ReplicaSet":
        errors += _validate_workload(spec)
    elif rt.kind == "Pod":
        errors += validate_pod_spec(spec, "spec")
    elif rt.kind == "Service":
        errors += _validate_service(spec)
    if old is not None and rt.kind in ("Deployment", "ReplicaSet"):
        before = (old.get("spec") or {}).get("selector")
        if _selector_shape(spec.get("selector")) != _selector_shape(before):
            errors.append(("spec.selector", f"Invalid value: "
                           f"{_go_selector(spec.get('selector'))}: field is immutable"))
    if errors:
        raise invalid(rt, str(meta.get("name") or ""), errors)
