//! The snapshot exports: directories (Okta, Workspace, IAM Identity Center, Entra), the Azure and GCP
//! authorization snapshots, and the AWS IAM snapshot's `email` tags.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::roles::GcpRoles;
use super::world::{AzScope, GScope, PKind, World};
use super::write_json;
use crate::org::Org;
use crate::util::time_string;
use crate::{OrgSpec, SynthError};

/// Files and bytes written.
#[derive(Default)]
pub(crate) struct Written {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

impl Written {
    fn json<T: serde::Serialize>(&mut self, path: &Path, v: &T) -> Result<(), SynthError> {
        self.bytes += write_json(path, v)?;
        self.files += 1;
        Ok(())
    }

    fn lines(&mut self, path: &Path, vs: &[Value]) -> Result<(), SynthError> {
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).map_err(|e| SynthError::io(d, e))?;
        }
        let f = fs::File::create(path).map_err(|e| SynthError::io(path, e))?;
        let mut w = BufWriter::new(f);
        for v in vs {
            let line = serde_json::to_vec(v)?;
            w.write_all(&line).and_then(|()| w.write_all(b"\n")).map_err(|e| SynthError::io(path, e))?;
            self.bytes += line.len() as u64 + 1;
        }
        w.flush().map_err(|e| SynthError::io(path, e))?;
        self.files += 1;
        Ok(())
    }
}

/// Rewrites `iam/<account>.json` with an `email` tag on the IAM users that belong to a human.
pub(crate) fn tag_aws_users(world: &World, org: &Org, spec: &OrgSpec, out: &Path) -> Result<(), SynthError> {
    for (ai, acct) in org.accounts.iter().enumerate() {
        if !world.aws_tags.keys().any(|(a, _)| *a as usize == ai) {
            continue;
        }
        let mut doc = org.authorization_details(ai, spec.url_encode_policies);
        if let Some(users) = doc["UserDetailList"].as_array_mut() {
            for u in users {
                let name = u["UserName"].as_str().unwrap_or_default().to_string();
                if let Some(email) = world.aws_tags.get(&(ai as u32, name)) {
                    u["Tags"] = json!([{"Key": "email", "Value": email}]);
                }
            }
        }
        write_json(&out.join("iam").join(format!("{}.json", acct.id)), &doc)?;
    }
    Ok(())
}

/// Snapshot files that no event changes after planning (attacks included: the snapshot is taken at
/// the end).
pub(crate) fn write_snapshots(
    world: &World,
    gcp_ref: &GcpRoles,
    out: &Path,
    as_of: i64,
    w: &mut Written,
) -> Result<(), SynthError> {
    identity_center(world, out, w)?;
    if !world.azure.subs.is_empty() {
        azure(world, out, as_of, w)?;
    }
    if !world.gcp.projects.is_empty() {
        gcp(world, gcp_ref, out, as_of, w)?;
    }
    Ok(())
}

fn identity_center(world: &World, out: &Path, w: &mut Written) -> Result<(), SynthError> {
    let users: Vec<Value> = world
        .humans
        .iter()
        .filter_map(|h| {
            let id = h.idc_id.as_ref()?;
            Some(json!({
                "UserName": h.email,
                "UserId": id,
                "ExternalIds": [{"Issuer": format!("https://{}", world.okta_host), "Id": h.okta_id}],
                "Name": {"FamilyName": super::world::cap(&h.last), "GivenName": super::world::cap(&h.first)},
                "DisplayName": h.display(),
                "Emails": [{"Value": h.email, "Type": "work", "Primary": true}],
                "IdentityStoreId": world.identity_store
            }))
        })
        .collect();
    w.json(&out.join("identity-center/users.json"), &json!({ "Users": users }))
}

fn azure(world: &World, out: &Path, as_of: i64, w: &mut Written) -> Result<(), SynthError> {
    let az = &world.azure;
    let dir = out.join("azure");
    let t = az.tenant.as_str();
    let subs: Vec<Value> = az
        .subs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "cloudName": "AzureCloud", "homeTenantId": t, "id": s.id, "isDefault": i == 0,
                "managedByTenants": [], "name": s.name, "state": "Enabled", "tenantId": t,
                "user": {"name": "platform-automation@example.com", "type": "user"}
            })
        })
        .collect();
    w.json(&dir.join("subscriptions.json"), &subs)?;

    fn mg_node(world: &World, m: u32, depth: u32) -> Value {
        let az = &world.azure;
        let mg = &az.mgs[m as usize];
        let mut children: Vec<Value> = Vec::new();
        if depth < 16 {
            for (c, child) in az.mgs.iter().enumerate() {
                if child.parent == Some(m) {
                    children.push(mg_node(world, c as u32, depth + 1));
                }
            }
        }
        for s in az.subs.iter().filter(|s| s.mg == m) {
            children.push(json!({
                "children": null, "displayName": s.name, "id": format!("/subscriptions/{}", s.id),
                "name": s.id, "type": "/subscriptions"
            }));
        }
        json!({
            "children": if children.is_empty() { Value::Null } else { Value::Array(children) },
            "displayName": mg.display,
            "id": format!("/providers/Microsoft.Management/managementGroups/{}", mg.name),
            "name": mg.name,
            "type": "Microsoft.Management/managementGroups"
        })
    }
    let mut root = mg_node(world, 0, 0);
    root["tenantId"] = json!(t);
    root["details"] = json!({"parent": null, "updatedBy": uuid_like(t), "updatedTime": time_string(as_of - 86_400 * 200), "version": 7});
    w.json(&dir.join("management-groups.json"), &root)?;

    let defs: Vec<Value> = az
        .roles
        .iter()
        .filter_map(|r| {
            let (perms, scopes, desc) = r.custom.as_ref()?;
            let home = az.subs.first().map(|s| s.id.as_str()).unwrap_or("00000000-0000-0000-0000-000000000000");
            Some(json!({
                "assignableScopes": scopes, "createdBy": uuid_like(&r.guid), "createdOn": time_string(as_of - 86_400 * 300),
                "description": desc,
                "id": format!("/subscriptions/{home}/providers/Microsoft.Authorization/roleDefinitions/{}", r.guid),
                "name": r.guid,
                "permissions": perms.iter().map(|p| json!({
                    "actions": p.actions, "condition": null, "conditionVersion": null, "dataActions": p.data_actions,
                    "notActions": p.not_actions, "notDataActions": p.not_data_actions
                })).collect::<Vec<_>>(),
                "roleName": r.name, "roleType": "CustomRole", "type": "Microsoft.Authorization/roleDefinitions",
                "updatedBy": uuid_like(&r.guid), "updatedOn": time_string(as_of - 86_400 * 120)
            }))
        })
        .collect();
    w.json(&dir.join("role-definitions.json"), &defs)?;

    let mut list = Vec::new();
    for (si, s) in az.subs.iter().enumerate() {
        for a in &az.assignments {
            let listed = match a.scope {
                AzScope::Mg(m) => az.mg_chain(si as u32).contains(&m),
                AzScope::Sub(x) | AzScope::Rg(x, _) | AzScope::Res(x, _) => x as usize == si,
            };
            if !listed {
                continue;
            }
            let p = &az.principals[a.principal as usize];
            let role = &az.roles[a.role as usize];
            let scope = az.scope_str(a.scope);
            let rg = match a.scope {
                AzScope::Rg(x, rg) => Value::String(az.subs[x as usize].rgs[rg as usize].clone()),
                AzScope::Res(x, r) => {
                    let sub = &az.subs[x as usize];
                    Value::String(sub.rgs[sub.res[r as usize].rg as usize].clone())
                }
                _ => Value::Null,
            };
            let (ptype, pname) = match p.kind {
                PKind::User => ("User", p.upn.clone().unwrap_or_default()),
                PKind::Group => ("Group", p.display.clone()),
                _ => ("ServicePrincipal", p.app_id.clone().unwrap_or_default()),
            };
            list.push(json!({
                "condition": null, "conditionVersion": null, "createdBy": uuid_like(&a.id),
                "createdOn": time_string(a.created), "delegatedManagedIdentityResourceId": null, "description": null,
                "id": format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", a.id),
                "name": a.id, "principalId": p.oid, "principalName": pname, "principalType": ptype,
                "resourceGroup": rg,
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}", s.id, role.guid),
                "roleDefinitionName": role.name, "scope": scope, "type": "Microsoft.Authorization/roleAssignments",
                "updatedBy": uuid_like(&a.id), "updatedOn": time_string(a.created)
            }));
        }
    }
    w.json(&dir.join("role-assignments.json"), &list)?;

    let ctx = |what: &str| format!("https://graph.microsoft.com/v1.0/$metadata#{what}");
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sps = Vec::new();
    for p in &az.principals {
        match p.kind {
            PKind::User => {
                let h = p.human.map(|h| &world.humans[h as usize]);
                users.push(json!({
                    "id": p.oid, "displayName": p.display,
                    "givenName": h.map(|h| super::world::cap(&h.first)), "surname": h.map(|h| super::world::cap(&h.last)),
                    "userPrincipalName": p.upn, "mail": p.upn, "accountEnabled": true, "userType": "Member",
                    "createdDateTime": time_string(p.created)
                }));
            }
            PKind::Group => {
                let members: Vec<Value> = p
                    .members
                    .iter()
                    .map(|&m| {
                        let u = &az.principals[m as usize];
                        json!({"@odata.type": "#microsoft.graph.user", "id": u.oid, "displayName": u.display, "userPrincipalName": u.upn})
                    })
                    .collect();
                groups.push(json!({
                    "id": p.oid, "displayName": p.display, "description": null, "mailEnabled": false,
                    "securityEnabled": true, "groupTypes": [], "mailNickname": p.display,
                    "createdDateTime": time_string(p.created), "members": members
                }));
            }
            PKind::ServicePrincipal | PKind::ManagedIdentity => {
                let mi = p.kind == PKind::ManagedIdentity;
                let alt: Vec<String> = match &p.mi_resource {
                    Some(r) => vec!["isExplicit=True".into(), r.clone()],
                    None => Vec::new(),
                };
                sps.push(json!({
                    "id": p.oid, "appId": p.app_id, "displayName": p.display, "accountEnabled": true,
                    "servicePrincipalType": if mi { "ManagedIdentity" } else { "Application" },
                    "alternativeNames": alt, "appOwnerOrganizationId": if mi { Value::Null } else { json!(az.tenant) },
                    "servicePrincipalNames": [p.app_id.clone().unwrap_or_default()], "tags": []
                }));
            }
        }
    }
    w.json(&dir.join("users.json"), &json!({"@odata.context": ctx("users"), "value": users}))?;
    w.json(&dir.join("groups.json"), &json!({"@odata.context": ctx("groups(members())"), "value": groups}))?;
    w.json(&dir.join("service-principals.json"), &json!({"@odata.context": ctx("servicePrincipals"), "value": sps}))
}

/// A stable id-looking string derived from another (audit fields nobody joins on).
fn uuid_like(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let x = format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

fn gcp(world: &World, gcp_ref: &GcpRoles, out: &Path, as_of: i64, w: &mut Written) -> Result<(), SynthError> {
    let g = &world.gcp;
    let dir = out.join("gcp");
    let crm = "//cloudresourcemanager.googleapis.com";
    let org_anc = format!("organizations/{}", g.org);
    let update = time_string(as_of - 3600);
    let mut policies = Vec::new();
    let mut resources = Vec::new();
    let policy = |scope: GScope| -> Value {
        let bindings: Vec<Value> = g
            .bindings
            .iter()
            .filter(|b| b.scope == scope)
            .map(|b| {
                let mut m = b.members.clone();
                m.sort();
                json!({"role": g.roles[b.role as usize].name, "members": m})
            })
            .collect();
        json!({"version": 1, "bindings": bindings, "etag": "BwYhVq0x1yE="})
    };
    let has = |scope: GScope| g.bindings.iter().any(|b| b.scope == scope);
    if has(GScope::Org) {
        policies.push(json!({
            "name": format!("{crm}/organizations/{}", g.org), "assetType": "cloudresourcemanager.googleapis.com/Organization",
            "iamPolicy": policy(GScope::Org), "ancestors": [org_anc], "updateTime": update
        }));
    }
    for (fi, f) in g.folders.iter().enumerate() {
        let anc = vec![format!("folders/{}", f.id), org_anc.clone()];
        if has(GScope::Folder(fi as u32)) {
            policies.push(json!({
                "name": format!("{crm}/folders/{}", f.id), "assetType": "cloudresourcemanager.googleapis.com/Folder",
                "iamPolicy": policy(GScope::Folder(fi as u32)), "ancestors": anc, "updateTime": update
            }));
        }
        resources.push(json!({
            "name": format!("{crm}/folders/{}", f.id), "assetType": "cloudresourcemanager.googleapis.com/Folder",
            "resource": {
                "version": "v2", "discoveryDocumentUri": "https://cloudresourcemanager.googleapis.com/$discovery/rest?version=v2",
                "discoveryName": "Folder", "parent": format!("{crm}/{org_anc}"),
                "data": {"name": format!("folders/{}", f.id), "parent": org_anc, "displayName": f.display, "lifecycleState": "ACTIVE"}
            },
            "ancestors": anc, "updateTime": update
        }));
    }
    for (pi, p) in g.projects.iter().enumerate() {
        let anc = g.ancestors(pi as u32);
        let folder = &g.folders[p.folder as usize];
        if has(GScope::Project(pi as u32)) {
            policies.push(json!({
                "name": format!("{crm}/projects/{}", p.number), "assetType": "cloudresourcemanager.googleapis.com/Project",
                "iamPolicy": policy(GScope::Project(pi as u32)), "ancestors": anc, "updateTime": update
            }));
        }
        for (bi, b) in p.buckets.iter().enumerate() {
            let s = GScope::Bucket(pi as u32, bi as u16);
            if has(s) {
                policies.push(json!({
                    "name": format!("//storage.googleapis.com/{b}"), "assetType": "storage.googleapis.com/Bucket",
                    "iamPolicy": policy(s), "ancestors": anc, "updateTime": update
                }));
            }
        }
        resources.push(json!({
            "name": format!("{crm}/projects/{}", p.number), "assetType": "cloudresourcemanager.googleapis.com/Project",
            "resource": {
                "version": "v1", "discoveryDocumentUri": "https://www.googleapis.com/discovery/v1/apis/cloudresourcemanager/v1/rest",
                "discoveryName": "Project", "parent": format!("{crm}/folders/{}", folder.id),
                "data": {
                    "projectNumber": p.number, "projectId": p.id, "lifecycleState": "ACTIVE", "name": p.id,
                    "createTime": time_string(p.created), "parent": {"type": "folder", "id": folder.id}
                }
            },
            "ancestors": anc, "updateTime": update
        }));
    }
    w.lines(&dir.join("iam-policies.jsonl"), &policies)?;
    w.lines(&dir.join("projects.jsonl"), &resources)?;

    let mut sas = Vec::new();
    let mut keys = Vec::new();
    for s in &g.sas {
        let pid = &g.projects[s.project as usize].id;
        sas.push(json!({
            "displayName": s.display, "email": s.email, "etag": "MDEwMjE5MjA=",
            "name": format!("projects/{pid}/serviceAccounts/{}", s.email), "oauth2ClientId": s.unique_id,
            "projectId": pid, "uniqueId": s.unique_id, "disabled": false
        }));
        for k in &s.keys {
            let valid_before =
                if k.user_managed { "9999-12-31T23:59:59Z".to_string() } else { time_string(k.created + 86_400 * 14) };
            keys.push(json!({
                "keyAlgorithm": "KEY_ALG_RSA_2048",
                "keyOrigin": "GOOGLE_PROVIDED",
                "keyType": if k.user_managed { "USER_MANAGED" } else { "SYSTEM_MANAGED" },
                "name": format!("projects/{pid}/serviceAccounts/{}/keys/{}", s.email, k.id),
                "validAfterTime": time_string(k.created),
                "validBeforeTime": valid_before
            }));
        }
    }
    w.json(&dir.join("service-accounts.json"), &sas)?;
    w.json(&dir.join("service-account-keys.json"), &keys)?;
    let gcp_ref_perms = |r: &super::world::GRole, perms: &[String]| -> Vec<String> {
        r.perms.iter().map(|&i| perms[i as usize].clone()).collect()
    };
    let customs: Vec<Value> = g
        .roles
        .iter()
        .filter(|r| r.custom)
        .map(|r| {
            json!({
                "name": r.name, "title": r.title, "description": "Reads buckets' metadata and policies, and logs.",
                "includedPermissions": gcp_ref_perms(r, &gcp_ref.perms), "stage": "GA", "etag": "BwYhVq2Dk9c="
            })
        })
        .collect();
    w.json(&dir.join("custom-roles.json"), &customs)
}

/// Okta users and groups, and Workspace users: written after the activity (last logins).
pub(crate) fn write_directories(
    world: &World,
    out: &Path,
    okta_last: &[Option<i64>],
    ws_last: &[Option<i64>],
    w: &mut Written,
) -> Result<(), SynthError> {
    let host = &world.okta_host;
    let users: Vec<Value> = world
        .humans
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let login = h.spelled();
            let created = time_string(h.created);
            json!({
                "id": h.okta_id, "status": "ACTIVE", "created": created, "activated": created,
                "statusChanged": created, "lastLogin": okta_last.get(i).copied().flatten().map(time_string),
                "lastUpdated": created, "passwordChanged": created,
                "type": {"id": "oty1a2b3c4d5e6f7g8h9"},
                "profile": {
                    "firstName": super::world::cap(&h.first), "lastName": super::world::cap(&h.last),
                    "mobilePhone": null, "secondEmail": null, "login": login, "email": login
                },
                "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
                "_links": {"self": {"href": format!("https://{host}/api/v1/users/{}", h.okta_id)}}
            })
        })
        .collect();
    w.json(&out.join("okta/users.json"), &users)?;
    let groups: Vec<Value> = world
        .okta_groups
        .iter()
        .map(|g| {
            let members: Vec<&str> = g.members.iter().map(|&m| world.humans[m as usize].okta_id.as_str()).collect();
            json!({
                "id": g.id, "created": "2021-03-01T09:00:00.000Z", "lastUpdated": "2023-06-01T09:00:00.000Z",
                "lastMembershipUpdated": "2023-12-01T09:00:00.000Z", "objectClass": ["okta:user_group"],
                "type": "OKTA_GROUP", "profile": {"name": g.name, "description": g.description},
                "_links": {"users": {"href": format!("https://{host}/api/v1/groups/{}/users", g.id)}},
                "members": members
            })
        })
        .collect();
    w.json(&out.join("okta/groups.json"), &groups)?;

    let ws: Vec<Value> = world
        .humans
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let id = h.ws_id.as_ref()?;
            let last = ws_last.get(i).copied().flatten().map_or_else(|| "1970-01-01T00:00:00.000Z".to_string(), millis_z);
            Some(json!({
                "kind": "admin#directory#user", "id": id, "etag": "\"kZ3mN2cQ9yW4\"", "primaryEmail": h.email,
                "name": {"givenName": super::world::cap(&h.first), "familyName": super::world::cap(&h.last), "fullName": h.display()},
                "isAdmin": false, "isDelegatedAdmin": false, "lastLoginTime": last,
                "creationTime": millis_z(h.created), "agreedToTerms": true, "suspended": false, "archived": false,
                "changePasswordAtNextLogin": false, "ipWhitelisted": false,
                "emails": [{"address": h.email, "primary": true}],
                "aliases": [],
                "customerId": world.customer_id, "orgUnitPath": "/Engineering", "isMailboxSetup": true,
                "isEnrolledIn2Sv": h.ws_2sv, "isEnforcedIn2Sv": false, "includeInGlobalAddressList": true
            }))
        })
        .collect();
    w.json(&out.join("workspace/users.json"), &json!({"kind": "admin#directory#users", "users": ws}))
}

/// `YYYY-MM-DDTHH:MM:SS.000Z`.
pub(crate) fn millis_z(secs: i64) -> String {
    let s = time_string(secs);
    format!("{}.000Z", &s[..s.len() - 1])
}
