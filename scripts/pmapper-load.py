#!/usr/bin/env python3
"""Loads an IAM snapshot (the JSON of `aws iam get-account-authorization-details`) into a moto server
with boto3, so that PMapper can read it back through the AWS API. Run by `scripts/pmapper graph` with the
PMapper venv's python (it has boto3); see that script for the whole flow.

  pmapper-load.py account IAM_JSON                  prints the snapshot's one account id (or fails)
  pmapper-load.py load IAM_JSON ENDPOINT NOTES      loads it into moto at ENDPOINT (state must be fresh);
                                                    writes NOTES (JSON): {"skipped": what moto rejected,
                                                    "user_boundaries": {user ARN: boundary ARN}}

Order: customer managed policies (default version), groups, users, roles (+ their instance profiles).
AWS managed policies (arn:aws:iam::aws:policy/...) are not created: moto ships them (the server must run
with MOTO_IAM_LOAD_MANAGED_POLICIES=true) and they are attached by ARN. Anything moto rejects is skipped
with a warning on stderr and recorded, so one bad entity does not hide the rest. Credentials come from
the environment (fake ones, set by scripts/pmapper).
"""
import json
import re
import sys
import urllib.parse

ARN_ACCOUNT = re.compile(r"^arn:([\w-]+):iam::(\d{12}):")


def doc(value):
    """A policy document: an object, a JSON string, or a percent-encoded JSON string (as grantwatch reads
    them, crates/core/src/iam.rs decode_document_string)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ValueError("policy document is neither an object nor a string")
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            pass
    try:
        return json.loads(urllib.parse.unquote(value))
    except ValueError:
        return json.loads(urllib.parse.unquote(value.replace("+", " ")))


def snapshot_account(snap):
    """The one account id of every user/group/role/customer-policy ARN in the snapshot."""
    accounts, partitions = set(), set()
    for key in ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"):
        for item in snap.get(key) or []:
            m = ARN_ACCOUNT.match(item.get("Arn", ""))
            if m:
                partitions.add(m.group(1))
                accounts.add(m.group(2))
    if partitions - {"aws"}:
        raise SystemExit(f"pmapper-load: error: only the aws partition is supported (moto in us-east-1), found {sorted(partitions)}")
    if len(accounts) != 1:
        raise SystemExit(f"pmapper-load: error: expected the ARNs of one account, found {sorted(accounts) or 'none'}")
    return accounts.pop()


class Loader:
    def __init__(self, endpoint):
        import boto3  # only in the venv
        import botocore.config

        cfg = botocore.config.Config(retries={"max_attempts": 2}, connect_timeout=10, read_timeout=120)
        self.iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
        self.skipped = []
        self.counts = {}
        self.user_boundaries = {}  # user ARN -> boundary policy ARN

    def call(self, what, fn, **kwargs):
        """One IAM call; moto's rejection is a warning and a record, not a failure."""
        try:
            fn(**kwargs)
            self.counts[fn.__name__] = self.counts.get(fn.__name__, 0) + 1
            return True
        except Exception as ex:  # botocore ClientError, ParamValidationError, ...
            self.skip(what, str(ex).splitlines()[0][:300])
            return False

    def skip(self, what, msg):
        print(f"pmapper-load: warning: skipped {what}: {msg}", file=sys.stderr)
        self.skipped.append({"what": what, "error": msg})

    def attach(self, kind, name, arns_, fn, **key):
        for p in arns_ or []:
            self.call(f"attach {p['PolicyArn']} to {kind} {name}", fn, PolicyArn=p["PolicyArn"], **key)

    def inline(self, kind, name, policies, fn, **key):
        for p in policies or []:
            self.call(f"inline policy {p['PolicyName']} of {kind} {name}", fn,
                      PolicyName=p["PolicyName"], PolicyDocument=json.dumps(doc(p["PolicyDocument"])), **key)

    @staticmethod
    def tags(item):
        return [{"Key": t["Key"], "Value": t["Value"]} for t in item.get("Tags") or []]

    def check_aws_policy(self, p):
        """An AWS managed policy in the snapshot: moto has its own copy (a dated snapshot of AWS's); warn
        when moto lacks it or when its default document differs from the snapshot's (PMapper reads moto's)."""
        arn = p["Arn"]
        try:
            ver = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            theirs = self.iam.get_policy_version(PolicyArn=arn, VersionId=ver)["PolicyVersion"]["Document"]
        except Exception as ex:
            self.skip(f"AWS managed policy {arn} (not in moto?)", str(ex).splitlines()[0][:300])
            return
        ours = [v for v in p.get("PolicyVersionList") or [] if v.get("IsDefaultVersion")]
        if ours and doc(ours[0]["Document"]) != doc(theirs):
            # Not skipped: recorded so that a difference in results can be traced to it.
            self.skip(f"snapshot's document of AWS managed policy {arn}", "differs from moto's copy, which PMapper reads")

    def load(self, snap):
        iam = self.iam
        for p in snap.get("Policies") or []:
            if ":aws:policy/" in p["Arn"]:
                self.check_aws_policy(p)
                continue
            default = [v for v in p.get("PolicyVersionList") or [] if v.get("IsDefaultVersion")]
            if not default:
                self.skip(f"policy {p['Arn']}", "no default version in PolicyVersionList")
                continue
            kw = {"Path": p.get("Path") or "/"}
            if p.get("Description"):
                kw["Description"] = p["Description"]
            self.call(f"policy {p['Arn']}", iam.create_policy, PolicyName=p["PolicyName"],
                      PolicyDocument=json.dumps(doc(default[0]["Document"])), **kw)

        for g in snap.get("GroupDetailList") or []:
            name = g["GroupName"]
            if not self.call(f"group {name}", iam.create_group, GroupName=name, Path=g.get("Path") or "/"):
                continue
            self.inline("group", name, g.get("GroupPolicyList"), iam.put_group_policy, GroupName=name)
            self.attach("group", name, g.get("AttachedManagedPolicies"), iam.attach_group_policy, GroupName=name)

        for u in snap.get("UserDetailList") or []:
            name = u["UserName"]
            kw = {"Path": u.get("Path") or "/"}
            if self.tags(u):
                kw["Tags"] = self.tags(u)
            if not self.call(f"user {name}", iam.create_user, UserName=name, **kw):
                continue
            for group in u.get("GroupList") or []:
                self.call(f"membership of user {name} in group {group}", iam.add_user_to_group,
                          UserName=name, GroupName=group)
            self.inline("user", name, u.get("UserPolicyList"), iam.put_user_policy, UserName=name)
            self.attach("user", name, u.get("AttachedManagedPolicies"), iam.attach_user_policy, UserName=name)
            pb = (u.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
            if pb:
                # moto 5.2.5 keeps no user boundary (PutUserPermissionsBoundary is not implemented, CreateUser
                # ignores the parameter): recorded here, pmapper-run.py adds it to moto's answer.
                self.user_boundaries[u["Arn"]] = pb

        for r in snap.get("RoleDetailList") or []:
            name = r["RoleName"]
            kw = {"Path": r.get("Path") or "/"}
            if self.tags(r):
                kw["Tags"] = self.tags(r)
            if r.get("Description"):
                kw["Description"] = r["Description"]
            trust = r.get("AssumeRolePolicyDocument") or {"Version": "2012-10-17", "Statement": []}
            if not self.call(f"role {name}", iam.create_role, RoleName=name,
                             AssumeRolePolicyDocument=json.dumps(doc(trust)), **kw):
                continue
            self.inline("role", name, r.get("RolePolicyList"), iam.put_role_policy, RoleName=name)
            self.attach("role", name, r.get("AttachedManagedPolicies"), iam.attach_role_policy, RoleName=name)
            pb = (r.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
            if pb:
                self.call(f"permissions boundary {pb} of role {name}", iam.put_role_permissions_boundary,
                          RoleName=name, PermissionsBoundary=pb)
            # PMapper's EC2/SSM/Auto Scaling checks look at the role's instance profiles.
            for ip in r.get("InstanceProfileList") or []:
                ipname = ip["InstanceProfileName"]
                self.call(f"instance profile {ipname}", iam.create_instance_profile,
                          InstanceProfileName=ipname, Path=ip.get("Path") or "/")
                self.call(f"role {name} in instance profile {ipname}", iam.add_role_to_instance_profile,
                          InstanceProfileName=ipname, RoleName=name)


def read_snapshot(path):
    try:
        with open(path, encoding="utf-8") as f:
            snap = json.load(f)
    except (OSError, ValueError) as ex:
        raise SystemExit(f"pmapper-load: error: cannot read {path} as JSON: {ex}")
    if not isinstance(snap, dict) or not any(k in snap for k in ("UserDetailList", "RoleDetailList")):
        raise SystemExit(f"pmapper-load: error: {path} is not the JSON of get-account-authorization-details")
    return snap


def main(argv):
    if len(argv) == 3 and argv[1] == "account":
        print(snapshot_account(read_snapshot(argv[2])))
        return 0
    if len(argv) == 5 and argv[1] == "load":
        snap = read_snapshot(argv[2])
        snapshot_account(snap)
        loader = Loader(argv[3])
        loader.load(snap)
        with open(argv[4], "w", encoding="utf-8") as f:
            json.dump({"skipped": loader.skipped, "user_boundaries": loader.user_boundaries}, f, indent=1)
        done = ", ".join(f"{k} {v}" for k, v in sorted(loader.counts.items()))
        print(f"pmapper-load: loaded ({done}); skipped {len(loader.skipped)}", file=sys.stderr)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
