#!/usr/bin/env python3
"""Reference Sigma evaluation with pySigma, for grantwatch's Sigma differential test.

Usage:
    sigma_reference.py RULES_DIR DOCUMENTS.jsonl [--product aws|azure|gcp]

RULES_DIR is searched recursively for *.yml rules (rules/sigma). DOCUMENTS.jsonl has one JSON
object per line: a document as grantwatch's `sigma_document` writes it (crates/detect/src/sigma.rs).
For each document, in order, one line is printed: the ids of the matching rules (the rule's `id`,
else its path relative to RULES_DIR), sorted and separated by single spaces (an empty line when
none match). With --product only rules whose logsource.product is that product are evaluated.
Errors (an unconvertible rule, a bad document) go to stderr with exit status 1: the reference never
silently drops a rule.

How the reference works. pySigma has no evaluator, so the evaluation is done by SQLite:
  1. Each rule is parsed by pySigma (`SigmaCollection.from_yaml`) and converted by the PyPI SQLite
     backend (`pySigma-backend-sqlite`, `sqliteBackend(collate_nocase=True,
     fulltext_field="_fulltext")`) into `SELECT * FROM logs WHERE <condition>`. Modifiers, wildcards,
     `N of` conditions, `null`, `fieldref` and keywords are all pySigma's and the backend's doing:
     string equality is `= ... COLLATE NOCASE`, contains/startswith/endswith are `LIKE` (ASCII
     case-insensitive in SQLite), `re` is `REGEXP` (registered here as Python's `re.search`), `null`
     is `IS NULL`, and every NOT is null-safe (`NOT COALESCE(x, 0)`), so a condition on an absent
     field is false and its negation true, as in Sigma.
  2. Each document is flattened into rows of the table `logs`, one column per dotted field path
     (`userIdentity.arn`): a string is stored as is, a boolean as 'true'/'false', a number as its
     decimal text, JSON null as NULL, and an absent field is NULL. A field that holds an object is
     also stored as the object's compact JSON text with sorted keys (grantwatch matches a string
     against an object field that way), and its members get their own columns. An array makes one
     row per element (the product over all arrays of the document), each row holding that element
     at the array's path; a document matches a rule when any of its rows does, which is Sigma's
     any-member semantics. `_fulltext` holds every string value of the document joined by newlines,
     for keyword (field-less) detections.
  3. The rows of all documents are inserted with their document number, and each rule's query
     gives the documents it matches (`SELECT DISTINCT doc ...`).

Known differences from grantwatch's evaluator (rsigma), none of which the SigmaHQ cloud rules
exercise today:
  * Arrays: the row product equals any-member semantics only where an array field is matched
    positively. A negated condition on an array field is evaluated per row here (matches if some
    element fails the negated condition) but on the whole array by rsigma (all elements must fail);
    an empty array is NULL here (so `field: null` matches it) while rsigma sees an empty array.
  * Case folding: SQLite folds ASCII only; rsigma folds all of Unicode.
  * Floats: a non-integral number is Python's repr here and Rust's Display in rsigma (`1e+20` vs
    `100000000000000000000`).
  * Keywords: matched against the newline-joined string values, so a keyword spanning two values
    (containing a newline) could match here and not in rsigma.
  * Regular expressions: Python's `re` here, Rust's `regex` in rsigma (no look-around there).
  * Field names containing a literal dot are not distinguished from nested paths.
"""

import argparse
import itertools
import json
import re
import sqlite3
import sys
from pathlib import Path

from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

FULLTEXT = "_fulltext"
# A document whose arrays would expand to more rows than this is refused rather than half-checked.
MAX_ROWS_PER_DOC = 4096


def canonical(value):
    """The JSON text an object field is matched as (grantwatch's canonical_json)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def scalar(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return canonical(value)


def rows_of(value, path=""):
    """The flattened rows (dicts path -> stored value) of one value at `path`."""
    if isinstance(value, dict):
        base = {path: canonical(value)} if path else {}
        parts = [rows_of(v, f"{path}.{k}" if path else k) for k, v in value.items()]
        rows = []
        for combo in itertools.product(*parts) if parts else [()]:
            row = dict(base)
            for part in combo:
                row.update(part)
            rows.append(row)
            if len(rows) > MAX_ROWS_PER_DOC:
                raise ValueError(f"document expands to more than {MAX_ROWS_PER_DOC} rows")
        return rows
    if isinstance(value, list):
        if not value:
            return [{path: None}]
        rows = []
        for item in value:
            rows.extend(rows_of(item, path))
        return rows
    return [{path: scalar(value)}]


def strings_of(value, out):
    if isinstance(value, dict):
        for v in value.values():
            strings_of(v, out)
    elif isinstance(value, list):
        for v in value:
            strings_of(v, out)
    elif isinstance(value, str):
        out.append(value)


def regexp(pattern, value):
    return value is not None and re.search(pattern, str(value)) is not None


def load_rules(rules_dir, product):
    backend = sqliteBackend(collate_nocase=True, fulltext_field=FULLTEXT)
    rules = []
    for path in sorted(Path(rules_dir).rglob("*.yml")):
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
        for rule in collection.rules:
            if product and (rule.logsource.product or "").lower() != product:
                continue
            rule_id = str(rule.id) if rule.id else str(path.relative_to(rules_dir))
            queries = backend.convert_rule(rule)
            if len(queries) != 1:
                raise ValueError(f"{path}: expected one query, got {len(queries)}")
            rules.append((rule_id, queries[0], backend.required_fields(rule)))
    return rules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rules_dir")
    parser.add_argument("documents")
    parser.add_argument("--product", choices=["aws", "azure", "gcp"])
    args = parser.parse_args()

    rules = load_rules(args.rules_dir, args.product)
    docs = []
    with open(args.documents, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError(f"{args.documents}:{n}: not a JSON object")
                docs.append(doc)

    all_rows = []
    # Every field a rule names gets a column, so a field no document has reads as NULL (absent).
    columns = {FULLTEXT}.union(*(fields for _, _, fields in rules))
    for i, doc in enumerate(docs):
        strings = []
        strings_of(doc, strings)
        for row in rows_of(doc):
            row[FULLTEXT] = "\n".join(strings)
            columns.update(row)
            all_rows.append((i, row))

    con = sqlite3.connect(":memory:")
    con.create_function("regexp", 2, regexp, deterministic=True)
    cols = sorted(columns)
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
    con.execute(f"CREATE TABLE logs (doc INTEGER, {quoted})")
    placeholders = ", ".join("?" for _ in range(len(cols) + 1))
    con.executemany(
        f"INSERT INTO logs VALUES ({placeholders})",
        ([i] + [row.get(c) for c in cols] for i, row in all_rows),
    )

    matches = [[] for _ in docs]
    for rule_id, query, _ in rules:
        # The backend writes SELECT * FROM logs WHERE ...; only the documents are wanted.
        sql = re.sub(r"^SELECT \* FROM logs WHERE ", "SELECT DISTINCT doc FROM logs WHERE ", query)
        if sql == query:
            raise ValueError(f"unexpected query shape for {rule_id}: {query}")
        for (doc,) in con.execute(sql):
            matches[doc].append(rule_id)
    for found in matches:
        print(" ".join(sorted(found)))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one clear line for the Rust test's failure message
        print(f"sigma_reference: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
