#!/usr/bin/env python3
"""Builds data/gcp/audit-method-permissions.json.gz: Cloud Audit Log methodName -> IAM permission.

Cloud Audit Logs name the API call (`protoPayload.methodName`, e.g. `google.pubsub.v1.Publisher.CreateTopic`,
`v1.compute.instances.insert`) and, for most services, the permissions checked
(`authorizationInfo[].permission`). When an entry carries no authorizationInfo, grantwatch falls back to this
table. It is the join of two public data sets (see data/gcp/README.md):

* the audit methodNames per service (googleapis/google-cloudevents `json/audit/service_catalog.json`), and
* the REST method -> permissions map (iann0036/iam-dataset `gcp/map.json`), keyed by discovery-style method ids
  (`pubsub.projects.topics.create`), whose permission names are sometimes spelled `iam.googleapis.com-x.y`.

Join rules, in order (the first that gives one permission wins; ambiguous joins are left out, never guessed):

1. `v1.compute.instances.insert` / `beta.compute...` / `alpha.compute...`: strip the version; the rest is the REST
   id (`compute.instances.insert`).
2. The methodName is itself a REST id (`storage.buckets.create`).
3. gRPC-style `google.<pkg>.<ver>.<Service>.<Method>`: within the REST api named by the service host
   (`pubsub.googleapis.com` -> `pubsub`), the REST methods whose verb + resource spell the gRPC method
   (`create` + `topics` -> `CreateTopic`, `list` + `topics` -> `ListTopics`, also with the parent resource:
   `create` + `serviceAccounts` + `keys` -> `CreateServiceAccountKey`). Kept only when every such REST method
   gives the same permission.

One REST method lists every permission the call may check (`compute.instances.insert` also lists
`iam.serviceAccounts.actAs`, needed only when the request attaches a service account). Counting those as used
would keep them off every right-sizing plan, so the table keeps the method's own permission: the one whose
resource is the method's resource (and, among those, whose verb is the method's verb, with insert = create,
patch = update, aggregatedList = list), or the only one listed. Methods with no such permission are left out.
Only permissions of a predefined role are kept (the catalog knows no others). `testIamPermissions` methods are
left out: they check no permission.

Output (deterministic: sorted keys, gzip mtime 0): {"services": {serviceName: {methodName: permission}}}.

Run from the repository root: python3 tools/vendor_gcp_data.py [SHARED_DATA_DIR]
(default /work/shared/data). It also copies the three audit LogEntry samples into the GCP module's testdata.
"""
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data")
ROLES = SHARED / "gcp-iam-roles-iam-dataset" / "roles.jsonl.gz"
REST_MAP = SHARED / "gcp-iam-roles-iam-dataset" / "api_method_permission_map.json.gz"
AUDIT = SHARED / "gcp-audit-google-cloudevents" / "audit_service_catalog.json.gz"
SAMPLES = SHARED / "gcp-audit-google-cloudevents" / "samples"
OUT = ROOT / "data" / "gcp" / "audit-method-permissions.json.gz"
TESTDATA = ROOT / "crates" / "core" / "src" / "gcp" / "testdata" / "audit"

# Path segments of a REST id that are containers, not the resource the method acts on.
CONTAINERS = {"projects", "locations", "organizations", "folders", "global", "regions", "zones", "billingAccounts"}
VERB_SYNONYMS = {"insert": "create", "patch": "update", "aggregatedlist": "list"}


def normalize_permission(p):
    """`iam.googleapis.com-workforcePools.create` -> `iam.workforcePools.create`."""
    if ".googleapis.com-" in p:
        host, tail = p.split(".googleapis.com-", 1)
        return host.split(".")[-1] + "." + tail
    return p


def singular(word):
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses") or word.endswith("xes"):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def own_permission(resource, verb, permissions):
    """The method's own permission among those its REST method lists (see the module doc), or None."""
    verb = VERB_SYNONYMS.get(verb.lower(), verb.lower())
    best, best_score = None, -1
    for p in permissions:
        parts = p.split(".")
        if len(parts) < 3:
            continue
        score = (2 if parts[-2].lower() == (resource or "").lower() else 0) + (1 if parts[-1].lower() == verb else 0)
        if score > best_score:
            best, best_score = p, score
    if best_score >= 2:
        return best
    if len(permissions) == 1:
        return permissions[0]
    return None


def main():
    known = set()
    with gzip.open(ROLES, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                known.update(json.loads(line).get("includedPermissions", []))

    rest = json.load(gzip.open(REST_MAP, "rt", encoding="utf-8"))["api"]
    by_id = {}  # REST id -> own permission
    by_spelling = {}  # api -> lowercased gRPC-style spelling -> {permission}
    for api, body in rest.items():
        for method_id, method in (body.get("methods") or {}).items():
            perms = [normalize_permission(p["name"]) for p in method.get("permissions", []) if p.get("name")]
            if not perms:
                continue
            segs = method_id.split(".")[1:]
            # testIamPermissions checks no permission (it reports which the caller holds); the map lists one.
            if not segs or segs[-1] == "testIamPermissions":
                continue
            verb = segs[-1]
            resources = [s for s in segs[:-1] if s not in CONTAINERS]
            perm = own_permission(resources[-1] if resources else None, verb, perms)
            if perm is None:
                continue
            by_id[method_id] = perm
            spellings = set()
            v = verb.lower()
            if resources:
                last = resources[-1].lower()
                spellings |= {v + singular(last), v + last}
                if len(resources) >= 2:
                    prev = singular(resources[-2].lower())
                    spellings |= {v + prev + singular(last), v + prev + last}
            else:
                spellings.add(v)
            for s in spellings:
                by_spelling.setdefault(api, {}).setdefault(s, set()).add(perm)

    audit = json.load(gzip.open(AUDIT, "rt", encoding="utf-8"))["services"]
    out, counts = {}, {"methods": 0, "mapped": 0}
    for svc in audit:
        service = svc["serviceName"]
        api = service.split(".")[0]
        for m in svc.get("methods", []):
            name = m["methodName"]
            counts["methods"] += 1
            perm = None
            versioned = re.match(r"^(?:v\d+\w*|beta|alpha)\.(compute\..+)$", name)
            if versioned and versioned.group(1) in by_id:
                perm = by_id[versioned.group(1)]
            elif name in by_id:
                perm = by_id[name]
            elif name.startswith("google."):
                cands = by_spelling.get(api, {}).get(name.rsplit(".", 1)[-1].lower())
                if cands and len(cands) == 1:
                    perm = next(iter(cands))
            if perm and perm in known:
                out.setdefault(service, {})[name] = perm
                counts["mapped"] += 1

    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"services": out}, sort_keys=True, separators=(",", ":")).encode()
    with open(OUT, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(text)
    print(f"{OUT.relative_to(ROOT)}: {counts['mapped']} of {counts['methods']} audit methodNames mapped")

    TESTDATA.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.glob("*.json")):
        shutil.copyfile(sample, TESTDATA / sample.name)
    shutil.copyfile(SAMPLES.parent / "LICENSE", TESTDATA / "LICENSE")


if __name__ == "__main__":
    main()
