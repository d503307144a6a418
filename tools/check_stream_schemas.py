#!/usr/bin/env python3
"""Checks the JSON Schemas of the Kafka records (schemas/*.v1.json) against examples.

Each schema must accept its example (schemas/examples/<name>.example.json) and the valid variants
below, and reject the broken variants. Run from anywhere: python3 tools/check_stream_schemas.py
Needs the `jsonschema` module (4.x); `format: date-time` is checked when rfc3339-validator is installed.
"""
import copy
import json
import sys
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def changed(doc, edit):
    """A deep copy of doc with edit(copy) applied."""
    doc = copy.deepcopy(doc)
    edit(doc)
    return doc


def cases(name, ex):
    """(label, record, should_be_valid) for the schema `name`, built from its example `ex`."""
    if name == "detection_finding":
        yield "no unmapped, related_events, region, actor name", changed(ex, lambda d: (
            d.pop("unmapped"), d["finding_info"].pop("related_events"), d["cloud"].pop("region"))), True
        yield "behavioral, critical, actor name", changed(ex, lambda d: (
            d["finding_info"]["analytic"].update(type_id=2, type="Behavioral"),
            d.update(severity_id=5, severity="Critical"), d["actor"]["user"].update(name="root"))), True
        yield "class_uid 2003", changed(ex, lambda d: d.update(class_uid=2003)), False
        yield "type_uid 200402", changed(ex, lambda d: d.update(type_uid=200402)), False
        yield "severity_id 6", changed(ex, lambda d: d.update(severity_id=6)), False
        yield "severity_id 2 with severity High", changed(ex, lambda d: d.update(severity_id=2)), False
        yield "analytic type_id 1 with Behavioral", changed(
            ex, lambda d: d["finding_info"]["analytic"].update(type="Behavioral")), False
        yield "related event time as string", changed(
            ex, lambda d: d["finding_info"]["related_events"][0].update(time="2022-11-10T16:24:34Z")), False
        yield "unknown top-level field", changed(ex, lambda d: d.update(extra=1)), False
        yield "missing finding_info", changed(ex, lambda d: d.pop("finding_info")), False
    elif name == "pci_update":
        yield "no last_activity, flags", changed(ex, lambda d: (
            d.pop("last_activity"), d.update(status=["inactive", "super_identity"]))), True
        yield "fractional as_of", changed(ex, lambda d: d.update(as_of="2024-01-02T00:00:00.250Z")), True
        yield "missing arn", changed(ex, lambda d: d.pop("arn")), False
        yield "last_activity null", changed(ex, lambda d: d.update(last_activity=None)), False
        yield "score 101", changed(ex, lambda d: d["pci"].update(score=101)), False
        yield "unknown status flag", changed(ex, lambda d: d.update(status=["stale"])), False
        yield "as_of in milliseconds", changed(ex, lambda d: d.update(as_of=1704153600000)), False
    elif name == "dead_letter":
        for src in ({"kind": "kafka", "topic": "grantwatch.events", "partition": 3, "offset": 41},
                    {"kind": "lookup_events", "region": "us-east-1", "event_id": "deb1e1f9-c99b-4612-8e9f-21f93b5d79c0"},
                    {"kind": "stdin", "line": 12}):
            yield f"source {src['kind']}", changed(ex, lambda d, s=src: d.update(source=s)), True
        yield "truncated payload", changed(ex, lambda d: d.update(payload_truncated=True)), True
        yield "unknown source kind", changed(ex, lambda d: d.update(source={"kind": "s3", "line": 1})), False
        yield "kafka source without offset", changed(
            ex, lambda d: d.update(source={"kind": "kafka", "topic": "t", "partition": 0})), False
        yield "file source with a stdin field", changed(ex, lambda d: d["source"].update(line=1)), False
        yield "missing error", changed(ex, lambda d: d.pop("error")), False
    elif name == "entitlements":
        yield "no groups or access_keys", changed(ex, lambda d: (d.pop("groups"), d.pop("access_keys"))), True
        yield "key without created", changed(ex, lambda d: d["access_keys"][0].pop("created")), True
        yield "missing arn", changed(ex, lambda d: d.pop("arn")), False
        yield "unknown kind", changed(ex, lambda d: d.update(kind="robot")), False
        yield "secret on a key", changed(ex, lambda d: d["access_keys"][0].update(secret_access_key="x")), False
        yield "action without service", changed(ex, lambda d: d.update(granted=["GetObject"])), False


def main():
    failures = 0
    for name in ("detection_finding", "pci_update", "dead_letter", "entitlements"):
        schema = load(SCHEMAS / f"{name}.v1.json")
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        example = load(SCHEMAS / "examples" / f"{name}.example.json")
        for label, record, should_pass in [("example", example, True), *cases(name, example)]:
            errors = list(validator.iter_errors(record))
            ok = not errors if should_pass else bool(errors)
            failures += not ok
            want = "valid" if should_pass else "invalid"
            why = "" if ok else ": " + ("; ".join(e.message for e in errors[:3]) if errors else "accepted")
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {label} ({want}){why}")
    print(f"{failures} failure(s)" if failures else "all schema checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
