#!/usr/bin/env python3
"""Runs PMapper's `pmapper graph create` against a moto server, times it, reads the graph PMapper stored
and writes it as one JSON file. Run by `scripts/pmapper graph` with the PMapper venv's python, with the
fake credentials, AWS_DEFAULT_REGION and PMAPPER_STORAGE (a fresh directory) in the environment.

  pmapper-run.py ENDPOINT ACCOUNT NOTES_JSON OUT_JSON [extra `pmapper graph create` arguments]

NOTES_JSON is pmapper-load.py's output (what moto rejected; user boundaries).

Two adaptations, neither touching PMapper's logic:
- principalmapper 1.1.5 (the last release on PyPI) imports Mapping/MutableMapping from `collections`,
  which Python 3.10 removed (upstream issues #106, #130, #131, #140); they are aliased from
  collections.abc before PMapper is imported.
- moto 5.2.5's GetAccountAuthorizationDetails is not quite AWS's, so a botocore after-call hook
  (fix_gaad) mends the parsed answer before PMapper's gathering.get_nodes_groups_and_policies reads it:
  it fills in Policies[].PolicyName (moto leaves it out; PMapper needs it) from the ARN; adds the users'
  PermissionsBoundary, which moto cannot store (pmapper-load.py passes them in NOTES); and drops AWS
  managed policies that nothing uses, as AWS's answer does (moto returns all ~1,600 it ships).
"""
import collections
import collections.abc
import json
import os
import sys
import time

for _name in ("Mapping", "MutableMapping"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import botocore.session  # noqa: E402
import principalmapper  # noqa: E402
from principalmapper.__main__ import main as pmapper_main  # noqa: E402
from principalmapper.graphing import graph_actions  # noqa: E402
from principalmapper.util.storage import get_storage_root  # noqa: E402

PMAPPER_VERSION = "1.1.5"

USER_BOUNDARIES = {}  # user ARN -> boundary ARN, from pmapper-load.py


def fix_gaad(parsed, **_):
    """after-call hook of iam:GetAccountAuthorizationDetails: make moto's answer look like AWS's."""
    used = set()
    for u in parsed.get("UserDetailList", []):
        if u["Arn"] in USER_BOUNDARIES and "PermissionsBoundary" not in u:
            u["PermissionsBoundary"] = {"PermissionsBoundaryType": "PermissionsBoundaryPolicy",
                                        "PermissionsBoundaryArn": USER_BOUNDARIES[u["Arn"]]}
    for item in parsed.get("UserDetailList", []) + parsed.get("RoleDetailList", []):
        used.update(p["PolicyArn"] for p in item.get("AttachedManagedPolicies", []))
        used.add((item.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn"))
    for g in parsed.get("GroupDetailList", []):
        used.update(p["PolicyArn"] for p in g.get("AttachedManagedPolicies", []))
    if "Policies" in parsed:
        parsed["Policies"] = [p for p in parsed["Policies"] if ":aws:policy/" not in p["Arn"] or p["Arn"] in used]
        for p in parsed["Policies"]:
            p.setdefault("PolicyName", p["Arn"].rsplit("/", 1)[-1])


# Time spent in AWS API calls (moto's answer + botocore's parsing), in all and by service.
API = {"calls": 0, "seconds": 0.0, "t0": None, "by_service": {}}


def call_started(**_):
    API["t0"] = time.perf_counter()


def call_ended(event_name="", **_):
    if API["t0"] is not None:
        took = time.perf_counter() - API["t0"]
        service = event_name.split(".")[1] if event_name.count(".") >= 2 else "?"
        API["calls"] += 1
        API["seconds"] += took
        API["by_service"][service] = API["by_service"].get(service, 0.0) + took
        API["t0"] = None


_get_session = botocore.session.get_session


def get_session(*args, **kwargs):
    """PMapper's botocore_tools.get_session calls botocore.session.get_session(): same session, plus the hooks
    (PMapper makes every client from this session, one call at a time)."""
    session = _get_session(*args, **kwargs)
    session.register("after-call.iam.GetAccountAuthorizationDetails", fix_gaad)
    session.register("before-call", call_started)
    session.register("after-call", call_ended)
    session.register("after-call-error", call_ended)
    return session


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, account, notes_path, out_path = argv[1:5]
    with open(notes_path, encoding="utf-8") as f:
        notes = json.load(f)
    USER_BOUNDARIES.update(notes.get("user_boundaries", {}))
    extra = argv[5:]
    if principalmapper.__version__ != PMAPPER_VERSION:
        print(f"pmapper-run: error: principalmapper {principalmapper.__version__} installed, "
              f"expected {PMAPPER_VERSION}", file=sys.stderr)
        return 1
    botocore.session.get_session = get_session

    # `pmapper graph create` as a user would type it: the same code path, in this process so that the time
    # is PMapper's alone (no interpreter start-up or imports). --ignore-orgs: no stored organization data.
    sys.argv = ["pmapper", "graph", "create", "--localstack-endpoint", endpoint, "--ignore-orgs", *extra]
    print("pmapper-run: running " + " ".join(sys.argv), file=sys.stderr)
    t0 = time.perf_counter()
    rc = pmapper_main()
    seconds = time.perf_counter() - t0
    if rc:
        print(f"pmapper-run: error: pmapper exited with {rc}", file=sys.stderr)
        return 1

    # Read the graph back from where PMapper stored it ($PMAPPER_STORAGE/<account>/).
    graph_dir = os.path.join(get_storage_root(), account)
    graph = graph_actions.get_graph_from_disk(graph_dir)
    if graph.metadata.get("account_id") != account:
        print(f"pmapper-run: error: PMapper graphed account {graph.metadata.get('account_id')}, "
              f"expected {account}", file=sys.stderr)
        return 1
    out = {
        "pmapper_version": graph.metadata.get("pmapper_version"),
        "account": account,
        "seconds": round(seconds, 3),
        # of which in AWS API calls to moto (round trip + parsing); the rest is PMapper's own work
        "api_seconds": round(API["seconds"], 3),
        "api_calls": API["calls"],
        "api_seconds_by_service": {k: round(v, 3) for k, v in sorted(API["by_service"].items())},
        "pmapper_args": sys.argv[1:],
        "nodes": sorted(({"arn": n.arn, "is_admin": bool(n.is_admin)} for n in graph.nodes),
                        key=lambda n: n["arn"]),
        "edges": sorted(({"source": e.source.arn, "destination": e.destination.arn, "reason": e.short_reason,
                          "detail": e.reason} for e in graph.edges),
                        key=lambda e: (e["source"], e["destination"], e["reason"], e["detail"])),
        "load_skipped": notes.get("skipped", []),
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out_path)
    admins = sum(n["is_admin"] for n in out["nodes"])
    print(f"pmapper-run: {len(out['nodes'])} nodes ({admins} admins), {len(out['edges'])} edges "
          f"in {seconds:.2f}s ({API['calls']} API calls: {API['seconds']:.2f}s) -> {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
