"""Generate helm/lorafleet/values.schema.json from helm/lorafleet/values.yaml.

    python deploy/gen_values_schema.py            # rewrite the schema
    python deploy/gen_values_schema.py --check    # exit 1 if the committed schema is stale

values.yaml stays the one source: types come from the default values, the comment lines right
above a key become its description, and a `# @schema {...}` comment line (a YAML flow mapping)
is merged into that key's schema. Maps are closed (`additionalProperties: false`) so a typo in a
values file fails `helm install` instead of being ignored; a map holding Kubernetes objects passed
through verbatim (resources, affinity) opts out with `# @schema {additionalProperties: true}`.

One extension keyword, removed from the output: `itemPropertiesFrom: <top-level key>` on a list
makes its items accept the properties of that key's map as well (the `engines` entries take
every `engineDefaults` key).

Owned by the chart's tests: tests/deploy/test_helm_chart.py fails when the committed schema is
not what this generates from the committed values.yaml, and tests/deploy/test_gen_values_schema.py
covers this command line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "lorafleet"
SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"  # what Helm 3 and 4 both validate
ANNOTATION = re.compile(r"^\s*#\s*@schema\s+(?P<body>.+)$")
COMMENT = re.compile(r"^\s*#\s?(?P<text>.*)$")
EXTENSION_KEY = "itemPropertiesFrom"

Schema = dict[str, Any]


def scalar_type(value: Any) -> str | None:
    """JSON schema type of a YAML scalar (None for null: the annotation must say)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def key_comments(lines: list[str], key_line: int) -> tuple[list[str], Schema]:
    """Description lines and merged `@schema` annotations written right above a key."""
    description: list[str] = []
    annotation: Schema = {}
    index = key_line - 1
    while index >= 0 and (match := COMMENT.match(lines[index])):
        if set(match["text"].strip()) <= {"-"}:  # a section rule ends the block
            break
        if annotated := ANNOTATION.match(lines[index]):
            body = yaml.safe_load(annotated["body"])
            if not isinstance(body, dict):
                raise ValueError(f"values.yaml:{index + 1}: @schema needs a {{...}} mapping")
            annotation = deep_merge(body, annotation)
        else:
            description.insert(0, match["text"].strip())
        index -= 1
    return description, annotation


def deep_merge(base: Schema, override: Schema) -> Schema:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def node_schema(node: yaml.Node, lines: list[str]) -> Schema:
    """Schema of one composed YAML node, recursing into maps and lists."""
    if isinstance(node, yaml.MappingNode):
        return mapping_schema(node, lines)
    if isinstance(node, yaml.SequenceNode):
        schema: Schema = {"type": "array"}
        if node.value:
            schema["items"] = items_schema(node.value, lines)
        return schema
    kind = scalar_type(yaml.safe_load(yaml.serialize(node)))
    return {"type": kind} if kind else {}


def items_schema(items: list[yaml.Node], lines: list[str]) -> Schema:
    """One schema for a list's items: the union of the properties the default items show."""
    schemas = [node_schema(item, lines) for item in items]
    merged = schemas[0]
    for schema in schemas[1:]:
        if "properties" in merged and "properties" in schema:
            merged = deep_merge(merged, {"properties": schema["properties"]})
    return merged


def mapping_schema(node: yaml.MappingNode, lines: list[str]) -> Schema:
    properties: dict[str, Schema] = {}
    for key_node, value_node in node.value:
        description, annotation = key_comments(lines, key_node.start_mark.line)
        schema = node_schema(value_node, lines)
        if isinstance(value_node, yaml.MappingNode) and not value_node.value:
            schema = {"type": "object"}  # a `{}` default: a free map unless annotated
        if description:
            schema["description"] = " ".join(description)
        schema = deep_merge(schema, annotation)
        if schema.get("additionalProperties", False) is not False:
            schema.pop("properties", None)  # an open map: its defaults are examples, not rules
        properties[key_node.value] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


def resolve_extensions(schema: Schema, root: Schema) -> None:
    """Apply `itemPropertiesFrom` in place (see the module docstring)."""
    for child in schema.get("properties", {}).values():
        source = child.pop(EXTENSION_KEY, None)
        if source is not None:
            extra = root["properties"][source]["properties"]
            items = child.setdefault("items", {"type": "object"})
            items["properties"] = {**extra, **items.get("properties", {})}
            items.setdefault("additionalProperties", False)
        resolve_extensions(child, root)


def generate(values_path: Path) -> Schema:
    text = values_path.read_text(encoding="utf-8")
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{values_path}: the top level must be a mapping")
    schema = mapping_schema(root, text.splitlines())
    resolve_extensions(schema, schema)
    return {"$schema": SCHEMA_DRAFT, "title": "lorafleet Helm chart values", **schema}


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=CHART, help="chart directory")
    parser.add_argument("--check", action="store_true", help="fail if the schema is stale")
    args = parser.parse_args(argv)
    target = args.chart / "values.schema.json"
    expected = render(generate(args.chart / "values.yaml"))
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != expected:
            print(f"{target} is stale: run python deploy/gen_values_schema.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
