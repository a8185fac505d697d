"""docs/openapi*.yaml as response validators: OpenAPI 3.0 schemas turned into JSON Schema
(draft 2020-12) and checked with ``jsonschema``.

OpenAPI 3.0 differs from JSON Schema in two places this document uses: ``nullable: true`` and
the boolean ``exclusiveMinimum``/``exclusiveMaximum``; ``convert`` rewrites both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema
import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"
METHODS = ("get", "post", "put", "delete", "patch")


def convert(node: Any) -> Any:
    """An OpenAPI 3.0 schema (or a whole document) as JSON Schema 2020-12."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: convert(v) for k, v in node.items() if k not in ("nullable", "example")}
    for bound, excl in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(excl) is True:
            out[excl] = out.pop(bound)
        elif out.get(excl) is False:
            del out[excl]
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


class ApiSchema:
    """One OpenAPI document: which statuses each operation documents, and their bodies."""

    def __init__(self, name: str = "openapi.yaml") -> None:
        self.path = DOCS / name
        self.doc: dict[str, Any] = yaml.safe_load(self.path.read_text())
        self.uri = f"urn:build-swarm:{name}"
        self.converted = convert(self.doc)
        resource = referencing.Resource.from_contents(
            self.converted, default_specification=referencing.jsonschema.DRAFT202012)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            self.uri, resource)
        self._templates = [(t, self._regex(t)) for t in self.doc["paths"]]
        self.seen: set[tuple[str, str, str]] = set()

    @staticmethod
    def _regex(template: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", template)
        rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{rx}$")

    def operations(self) -> set[tuple[str, str]]:
        return {(p, m) for p, item in self.doc["paths"].items() for m in item if m in METHODS}

    def template_of(self, path: str, method: str) -> str:
        """The documented path template for a concrete path (literal segments win)."""
        path = path.split("?", 1)[0]
        hits = [t for t, rx in self._templates if rx.match(path)
                and method.lower() in self.doc["paths"][t]]
        if not hits:
            raise AssertionError(f"{method.upper()} {path} is not in {self.path.name}")
        return str(min(hits, key=lambda t: t.count("{")))

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            cur: Any = self.doc
            for part in ref[2:].split("/"):
                cur = cur[part]
            node = cur
        return node

    def response_schema(self, template: str, method: str, status: int,
                        content_type: str = "application/json") -> dict[str, Any] | None:
        """The JSON Schema of a documented response body (None: no body documented).

        Raises AssertionError if the status is not documented for the operation.
        """
        op = self.doc["paths"][template][method.lower()]
        responses = op["responses"]
        if str(status) not in responses:
            raise AssertionError(f"{method.upper()} {template} answered {status}, which "
                                 f"{self.path.name} does not document "
                                 f"(documented: {', '.join(sorted(responses))})")
        resp = self._deref(responses[str(status)])
        content = resp.get("content")
        if not content:
            return None
        media = content.get(content_type) or next(iter(content.values()))
        ptr = self._pointer(template, method, status, content, content_type)
        return {"$ref": f"{self.uri}#{ptr}"} if "schema" in media else None

    def _pointer(self, template: str, method: str, status: int, content: dict[str, Any],
                 content_type: str) -> str:
        raw = self.doc["paths"][template][method.lower()]["responses"][str(status)]
        ctype = content_type if content_type in content else next(iter(content))
        esc = ctype.replace("~", "~0").replace("/", "~1")
        if "$ref" in raw:
            return str(raw["$ref"])[1:] + f"/content/{esc}/schema"
        tesc = template.replace("~", "~0").replace("/", "~1")
        return f"/paths/{tesc}/{method.lower()}/responses/{status}/content/{esc}/schema"

    def component(self, name: str) -> dict[str, Any]:
        return {"$ref": f"{self.uri}#/components/schemas/{name}"}

    def check_body(self, schema: dict[str, Any], body: Any, what: str) -> None:
        v = jsonschema.Draft202012Validator(schema, registry=self.registry)
        errors = sorted(v.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            lines = [f"{what}: {len(errors)} schema error(s) against {self.path.name}:"]
            for e in errors[:10]:
                lines.append(f"  at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}")
            raise AssertionError("\n".join(lines))

    def validate(self, method: str, path: str, status: int, body: Any,
                 content_type: str = "application/json") -> None:
        """Assert that ``status`` is documented for the operation and ``body`` fits it."""
        template = self.template_of(path, method)
        self.seen.add((template, method.lower(), str(status)))
        schema = self.response_schema(template, method, status, content_type)
        if schema is not None and content_type == "application/json":
            self.check_body(schema, body, f"{method.upper()} {path} -> {status}")

    def validate_any(self, method: str, path: str, status: int, body: Any) -> None:
        """``validate``, except that a path or method the document does not have must be
        answered 404/405 with the Error body (how swarmd answers unknown routes)."""
        try:
            self.template_of(path, method)
        except AssertionError:
            assert status in (404, 405), f"{method} {path}: undocumented, answered {status}"
            self.check_body(self.component("Error"), body, f"{method} {path} -> {status}")
            return
        if status == 405:  # a documented path with another method
            self.check_body(self.component("Error"), body, f"{method} {path} -> {status}")
            return
        self.validate(method, path, status, body)
