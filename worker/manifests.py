"""Rendering the app's manifest templates into Kubernetes objects (pure: no I/O but reading files).

Owns the template language — `$VAR`, `${VAR}` and `$$` for a literal `$`, as
`envsubst` reads them — and the variables a release provides (SPEC §3). Values are
substituted *after* YAML parsing, into every string scalar (keys too), so a value
holding `: `, `#` or quotes can never change the document's structure. A plain
(unquoted) scalar is re-typed after substitution exactly as YAML would type the
text envsubst produces (`replicas: $N` becomes an int; only int, float, bool and
null), while a quoted scalar always stays a string. A template naming a variable
that is not defined is an error naming the file and the variable, raised before
anything is applied: never an empty substitution.

No live colour yet (the app's first release): `$COLOR_ACTIVE` renders as the
test colour's other colour, and `route-test.yml` loses every VirtualService route
without a `match` — the cookie route reaches the new colour, other requests get no
route (404) until promotion. So default traffic never reaches an unpromoted colour.

Applying the objects, and in which order, is `worker.steps` / `worker.kube`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from worker.colors import Color

if TYPE_CHECKING:
    from worker.appconfig import AppConfig
    from worker.releases import Release

TEMPLATE_FILES = ("service.yml", "deployment.yml", "gateway.yml", "route-test.yml", "route.yml")
DEPLOY_FILES = ("service.yml", "deployment.yml", "gateway.yml", "route-test.yml")  # seed's order
ROUTE_FILE = "route.yml"
TEST_ROUTE_FILE = "route-test.yml"
BUILTIN_VARIABLES = frozenset({"APP", "NAMESPACE", "TAG", "VERSION", "COLOR_TEST",
                               "COLOR_ACTIVE", "RELEASE_ID", "COMMIT", "IMAGE", "HOST"})
Manifest = dict[str, Any]

_REFERENCE = re.compile(r"\$(\$|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\}|\{)")
_STR = "tag:yaml.org,2002:str"
_RETYPED = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                      "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})
_RESOLVER = yaml.resolver.Resolver()


class TemplateError(Exception):
    """A template cannot be rendered; says which file, where, and why."""

    def __init__(self, source: str, reason: str, *, line: int | None = None,
                 variable: str | None = None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")
        self.source, self.reason, self.line, self.variable = source, reason, line, variable


def names_in(text: str) -> list[str]:
    """The variable names `text` refers to, in order (`$$` is not a reference)."""
    return [name for name in _references(text, source="template") if name is not None]


def substitute(text: str, values: Mapping[str, str], *, source: str,
               line: int | None = None) -> str:
    """`text` with every `$VAR`/`${VAR}` replaced and `$$` made `$`; unknown names fail."""
    def replace(match: re.Match[str]) -> str:
        name = _name(match, source, line)
        if name is None:
            return "$"
        if name not in values:
            raise TemplateError(source, f"unknown variable ${name} (known: "
                                f"{', '.join(sorted(values))})", line=line, variable=name)
        return values[name]
    return _REFERENCE.sub(replace, text)


def render(text: str, values: Mapping[str, str], *, source: str) -> list[Manifest]:
    """Every non-empty YAML document of `text`, substituted, as dicts."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise TemplateError(source, f"not valid YAML: {e}") from e
    documents: list[Manifest] = []
    for node in nodes:
        if node is None:
            continue
        for scalar in _scalars(node, set()):
            _substitute_scalar(scalar, values, source)
        document = _construct(node)
        if document is None:
            continue
        if not isinstance(document, dict) or not document.get("kind"):
            raise TemplateError(source, "every document must be a Kubernetes object "
                                "(a mapping with a kind)", line=node.start_mark.line + 1)
        documents.append(document)
    return documents


def variables(app: AppConfig, *, tag: str, commit: str, release_id: str, color_test: Color,
              color_active: Color | None) -> dict[str, str]:
    """The variables of SPEC §3 plus the app's `vars`; `$IMAGE` is the app's image, rendered."""
    values = dict(app.vars)
    values.update(APP=app.name, NAMESPACE=app.namespace, HOST=app.host, TAG=tag,
                  VERSION=app.version_for_tag(tag), COMMIT=commit, RELEASE_ID=release_id,
                  COLOR_TEST=color_test.value,
                  COLOR_ACTIVE=(color_active or color_test.other()).value)
    values["IMAGE"] = substitute(app.image, values, source=f"apps.{app.name}.image")
    return values


def release_variables(app: AppConfig, release: Release, *, live: Color | None) -> dict[str, str]:
    """Variables for deploying `release` while `live` (None: nothing yet) serves traffic."""
    return variables(app, tag=release.tag, commit=release.commit, release_id=release.id,
                     color_test=release.color, color_active=live)


def render_file(app: AppConfig, name: str, values: Mapping[str, str], *,
                default_route: bool = True) -> list[Manifest]:
    """One template of the app, rendered; `default_route=False` drops routes without a match."""
    path = Path(app.manifests) / name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(name, f"cannot read {path}: {e.strerror}") from e
    documents = render(text, values, source=name)
    return documents if default_route else [_without_default_route(d, name) for d in documents]


def deploy_manifests(app: AppConfig, release: Release, *,
                     live: Color | None) -> dict[str, list[Manifest]]:
    """What the deploy step applies, per file, in the seed's order."""
    values = release_variables(app, release, live=live)
    return {name: render_file(app, name, values,
                              default_route=live is not None or name != TEST_ROUTE_FILE)
            for name in DEPLOY_FILES}


def route_manifests(app: AppConfig, release: Release) -> list[Manifest]:
    """`route.yml` sending all traffic to `release`'s colour (promote, or rollback to it)."""
    values = release_variables(app, release, live=release.color)
    return render_file(app, ROUTE_FILE, values)


def check_templates(app: AppConfig) -> None:
    """Render every template once with sample values, so mistakes surface at start."""
    for color_active in (Color.GREEN, None):
        values = variables(app, tag="v0.0.0-blue", commit="0" * 40, release_id="check",
                           color_test=Color.BLUE, color_active=color_active)
        for name in TEMPLATE_FILES:
            render_file(app, name, values, default_route=color_active is not None
                        or name != TEST_ROUTE_FILE)


def _references(text: str, *, source: str) -> Iterator[str | None]:
    for match in _REFERENCE.finditer(text):
        yield _name(match, source, None)


def _name(match: re.Match[str], source: str, line: int | None) -> str | None:
    found = match.group(1)
    if found == "$":
        return None
    if found == "{":
        raise TemplateError(source, "'${' must be followed by a variable name and '}'",
                            line=line)
    return found.strip("{}")


def _scalars(node: yaml.Node, seen: set[int]) -> Iterator[yaml.ScalarNode]:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key, seen)
            yield from _scalars(value, seen)


def _substitute_scalar(node: yaml.ScalarNode, values: Mapping[str, str], source: str) -> None:
    if node.tag != _STR or "$" not in node.value:
        return
    text = substitute(node.value, values, source=source, line=node.start_mark.line + 1)
    if text == node.value:
        return
    node.value = text
    if node.style is None:  # plain: type it as YAML would the envsubst output
        tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        node.tag = tag if tag in _RETYPED else _STR


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _without_default_route(document: Manifest, source: str) -> Manifest:
    if document.get("kind") != "VirtualService":
        return document
    spec = dict(document.get("spec") or {})
    routes = [route for route in spec.get("http") or [] if route.get("match")]
    if not routes:
        raise TemplateError(source, "with no live colour yet only routes with a `match` are "
                            "kept, and this VirtualService has none")
    spec["http"] = routes
    return {**document, "spec": spec}
