//! Entitlements over a small organization in real export shapes (`../testdata/inventory/`):
//! organization 6 → folder 45 → project 123 (`shop-prod`), and project 456 (`shop-dev`) under the organization.

use std::sync::{Arc, OnceLock};

use grantwatch_types::{Cloud, IdentityKind};

use super::*;
use crate::gcp::export::parse_export;

pub(crate) fn catalog() -> Arc<Catalog> {
    static C: OnceLock<Arc<Catalog>> = OnceLock::new();
    C.get_or_init(|| Arc::new(Catalog::all_clouds().expect("catalog"))).clone()
}

const FILES: &[(&str, &str)] = &[
    ("cai-iam-policy.jsonl", include_str!("../testdata/inventory/cai-iam-policy.jsonl")),
    ("cai-resource.jsonl", include_str!("../testdata/inventory/cai-resource.jsonl")),
    ("deny-policies.json", include_str!("../testdata/inventory/deny-policies.json")),
    ("custom-roles.json", include_str!("../testdata/inventory/custom-roles.json")),
    ("service-accounts.json", include_str!("../testdata/inventory/service-accounts.json")),
    ("sa-keys.json", include_str!("../testdata/inventory/sa-keys.json")),
    ("groups.json", include_str!("../testdata/inventory/groups.json")),
    ("search-all-iam-policies.json", include_str!("../testdata/inventory/search-all-iam-policies.json")),
    ("get-iam-policy-wrapped.json", include_str!("../testdata/inventory/get-iam-policy-wrapped.json")),
];

fn inventory() -> GcpInventory {
    let mut inv = GcpInventory::default();
    for (name, text) in FILES {
        inv.extend(parse_export(name, text.as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    }
    inv
}

fn result() -> &'static GcpEntitlements {
    static R: OnceLock<GcpEntitlements> = OnceLock::new();
    R.get_or_init(|| entitlements(&inventory(), &catalog()))
}

fn identity(project: &str, member: &str) -> &'static IdentityGrants {
    let uid = identity_uid(project, member);
    result().identities.iter().find(|g| g.arn == uid).unwrap_or_else(|| {
        let all: Vec<&str> = result().identities.iter().map(|g| g.arn.as_str()).collect();
        panic!("no identity {uid}; have {all:#?}")
    })
}

fn has(set: &ActionSet, perm: &str) -> bool {
    let id = catalog().lookup(perm).unwrap_or_else(|| panic!("{perm} not in the catalog"));
    set.contains(id)
}

#[test]
fn the_files_are_read_as_what_they_are() {
    let inv = inventory();
    assert_eq!((inv.policies.len(), inv.projects.len(), inv.deny_policies.len()), (8, 2, 1));
    assert_eq!((inv.custom_roles.len(), inv.service_accounts.len(), inv.keys.len(), inv.groups.len()), (1, 2, 2, 2));
    assert_eq!((inv.ignored, inv.skipped), (1, 0), "the bucket of the resource export is ignored");
    let wrapped = inv.policies.iter().find(|p| p.origin.starts_with("get-iam-policy-wrapped")).unwrap();
    assert_eq!(wrapped.resource, "//cloudresourcemanager.googleapis.com/projects/shop-dev");
}

#[test]
fn organization_and_folder_bindings_reach_the_projects_below() {
    // roles/browser on the organization: both projects, by id (numbers resolved through the resource export).
    for project in ["shop-prod", "shop-dev"] {
        let g = identity(project, "user:auditor@example.com");
        assert_eq!(
            (g.account.as_str(), g.kind, g.cloud, g.name.as_str()),
            (project, IdentityKind::User, Cloud::Gcp, "auditor@example.com")
        );
        assert_eq!(g.emails, ["auditor@example.com"]);
        assert!(has(&g.unscoped, "resourcemanager.projects.get"));
    }
    // roles/compute.viewer on folder 45 reaches shop-prod (under it), not shop-dev (beside it).
    let eng_prod = identity("shop-prod", "group:eng@example.com");
    assert_eq!(eng_prod.kind, IdentityKind::Group);
    assert!(has(&eng_prod.unscoped, "compute.instances.get"));
    let eng_dev = identity("shop-dev", "group:eng@example.com");
    assert!(has(&eng_dev.granted, "compute.instances.create"), "roles/editor on shop-dev");
    assert!(
        !has(&eng_dev.granted, "compute.instances.setIamPolicy")
            || has(&eng_dev.unscoped, "compute.instances.setIamPolicy")
    );
    assert!(result().warnings.iter().all(|w| !w.contains("project number")), "{:?}", result().warnings);
}

#[test]
fn a_binding_on_a_resource_is_scoped_to_it() {
    let dave = identity("shop-prod", "user:dave@example.com");
    let get = catalog().lookup("storage.objects.get").unwrap();
    assert!(dave.granted.contains(get));
    assert!(!dave.unscoped.contains(get));
    let (_, patterns) =
        dave.resource_patterns.iter().find(|(id, _)| *id == get).expect("patterns of storage.objects.get");
    assert_eq!(&patterns[..], ["//storage.googleapis.com/shop-assets"]);
    assert!(dave.resource_patterns.windows(2).all(|w| w[0].0 < w[1].0), "sorted by action id");
    // Dave is bound nowhere in shop-dev.
    assert!(result().identities.iter().all(|g| g.arn != identity_uid("shop-dev", "user:dave@example.com")));
    // search-all-iam-policies: a dataset of shop-dev (named by number in `project`).
    let ivy = identity("shop-dev", "user:ivy@example.com");
    assert!(has(&ivy.granted, "bigquery.tables.getData") && !has(&ivy.unscoped, "bigquery.tables.getData"));
    // The wrapped get-iam-policy of shop-dev.
    assert!(has(&identity("shop-dev", "user:jack@example.com").unscoped, "pubsub.topics.list"));
}

#[test]
fn custom_role_permissions_unknown_to_the_catalog_are_warnings() {
    let ci = identity("shop-prod", "serviceAccount:ci@shop-prod.iam.gserviceaccount.com");
    assert_eq!(ci.kind, IdentityKind::ServiceAccount);
    assert!(has(&ci.unscoped, "run.services.update") && has(&ci.unscoped, "iam.serviceAccounts.actAs"));
    assert_eq!(ci.granted.len(), 2);
    assert!(
        ci.warnings
            .iter()
            .any(|w| w.contains("projects/shop-prod/roles/deployer") && w.contains("storage.buckets.frobnicate")),
        "{:?}",
        ci.warnings
    );
    assert!(result().warnings.iter().any(|w| w.contains("storage.buckets.frobnicate")));
}

#[test]
fn group_members_inherit_nested_groups_too() {
    let frank = identity("shop-dev", "user:frank@example.com");
    assert_eq!(frank.groups, ["eng@example.com"]);
    assert!(has(&frank.unscoped, "compute.instances.create"));
    // gina is in sre, which is in eng.
    let gina = identity("shop-dev", "user:gina@example.com");
    assert_eq!(gina.groups, ["eng@example.com", "sre@example.com"]);
    assert!(has(&gina.unscoped, "compute.instances.create"));
}

#[test]
fn a_conditional_binding_grants_conditionally() {
    let bob = identity("shop-prod", "user:bob@example.com");
    assert!(has(&bob.granted, "storage.buckets.delete"));
    assert!(has(&bob.conditional, "storage.buckets.delete"));
    let alice = identity("shop-prod", "user:alice@example.com");
    assert!(has(&alice.granted, "storage.buckets.delete") && !has(&alice.conditional, "storage.buckets.delete"));
}

#[test]
fn deny_policy_removes_for_the_group_but_not_the_exception() {
    // Deny on shop-prod: compute.instances.list for eng (frank, nested gina), except erin.
    let frank = identity("shop-prod", "user:frank@example.com");
    assert!(!has(&frank.granted, "compute.instances.list"), "denied");
    assert!(!has(&frank.unscoped, "compute.instances.list"));
    assert!(has(&frank.granted, "compute.instances.get"), "only the denied permission goes");
    assert!(!has(&identity("shop-prod", "user:gina@example.com").granted, "compute.instances.list"));
    assert!(!has(&identity("shop-prod", "group:eng@example.com").granted, "compute.instances.list"));
    assert!(
        has(&identity("shop-prod", "user:erin@example.com").granted, "compute.instances.list"),
        "exception principal"
    );
    // The policy is attached to shop-prod only.
    assert!(has(&identity("shop-dev", "user:frank@example.com").granted, "compute.instances.list"));
    // The conditional rule (buckets.delete for everyone) is not applied, and is said.
    assert!(has(&identity("shop-prod", "user:alice@example.com").granted, "storage.buckets.delete"));
    assert!(
        result().warnings.iter().any(|w| w.contains("eng-no-compute-list rule 1") && w.contains("denial condition"))
    );
    assert!(identity("shop-prod", "user:alice@example.com").warnings.iter().any(|w| w.contains("conditional")));
}

#[test]
fn all_users_are_public_exposures_not_identities() {
    let public = &result().public;
    assert_eq!(
        public
            .iter()
            .map(|p| (p.project.as_deref(), p.resource.as_str(), p.role.as_str(), p.member.as_str()))
            .collect::<Vec<_>>(),
        [
            (
                Some("shop-dev"),
                "//bigquery.googleapis.com/projects/shop-dev/datasets/analytics",
                "roles/bigquery.dataViewer",
                "allAuthenticatedUsers"
            ),
            (Some("shop-prod"), "//storage.googleapis.com/shop-assets", "roles/storage.objectViewer", "allUsers"),
        ]
    );
    assert!(
        result().identities.iter().all(|g| !g.arn.contains("allUsers") && !g.arn.contains("allAuthenticatedUsers"))
    );
}

#[test]
fn convenience_members_expand_to_the_basic_role_holders() {
    // `projectOwner:shop-prod` on the bucket: alice (roles/owner on shop-prod) gets the legacy bucket role's
    // permissions scoped to the bucket; the pseudo-member is no identity.
    let alice = identity("shop-prod", "user:alice@example.com");
    assert!(alice.groups.is_empty());
    assert!(result().identities.iter().all(|g| !g.arn.contains("projectOwner:") && !g.arn.contains("projectViewer:")));
    // `projectViewer:shop-prod` holds roles/storage.objectViewer on the bucket: henry (roles/viewer on
    // shop-prod) reads its objects, scoped to the bucket.
    let henry =
        identity("shop-prod", "principal://iam.googleapis.com/locations/global/workforcePools/corp-idp/subject/henry");
    let get = catalog().lookup("storage.objects.get").unwrap();
    assert!(henry.granted.contains(get) && !henry.unscoped.contains(get));
    // jack holds roles/viewer on shop-dev only: nothing of the shop-prod bucket.
    assert!(!has(&identity("shop-dev", "user:jack@example.com").granted, "storage.objects.get"));
}

#[test]
fn principals_of_identity_pools_and_deleted_members() {
    let henry =
        identity("shop-prod", "principal://iam.googleapis.com/locations/global/workforcePools/corp-idp/subject/henry");
    assert_eq!(henry.kind, IdentityKind::External);
    assert!(henry.emails.is_empty());
    let gh = identity(
        "shop-prod",
        "principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/github/attribute.repository/example/shop",
    );
    assert_eq!(gh.kind, IdentityKind::ServiceAccount);
    let mallory = identity("shop-prod", "user:mallory@example.com");
    assert!(mallory.warnings.iter().any(|w| w.contains("bound as a deleted principal")));
}

#[test]
fn only_user_managed_keys_are_access_keys() {
    let ci = identity("shop-prod", "serviceAccount:ci@shop-prod.iam.gserviceaccount.com");
    assert_eq!(ci.access_keys.len(), 1);
    let k = &ci.access_keys[0];
    assert_eq!(k.access_key_id, "3f1c9a7d0b2e4f6a8c1d3e5f7a9b0c2d4e6f8a1b");
    assert!(k.active);
    assert_eq!(k.created.map(|t| t.to_rfc3339()).as_deref(), Some("2023-11-20T09:15:00Z"));
    assert_eq!(k.account.as_deref(), Some("shop-prod"));
}

#[test]
fn impersonation_edges_project_wide_and_on_one_service_account() {
    let inv = inventory();
    let edges = impersonation_edges(&inv, &result().identities, &catalog());
    let ci = identity_uid("shop-prod", "serviceAccount:ci@shop-prod.iam.gserviceaccount.com");
    let runtime = identity_uid("shop-prod", "serviceAccount:runtime@shop-prod.iam.gserviceaccount.com");
    let carol = identity_uid("shop-prod", "user:carol@example.com");
    let dave = identity_uid("shop-prod", "user:dave@example.com");
    let has_edge = |from: &str, to: &str, perm: &str| edges.iter().any(|(f, t, p)| f == from && t == to && p == perm);
    // roles/iam.serviceAccountUser on the project: every service account of shop-prod.
    assert!(has_edge(&carol, &ci, "iam.serviceAccounts.actAs"));
    // runtime holds no role anywhere: the edge goes to its home-project uid.
    assert!(has_edge(&carol, &runtime, "iam.serviceAccounts.actAs"));
    // Token Creator on the ci account's own resource (named by unique id): ci only.
    assert!(has_edge(&dave, &ci, "iam.serviceAccounts.getAccessToken"));
    assert!(!edges.iter().any(|(f, t, _)| *f == dave && *t == runtime));
    // ci's custom role holds actAs on the project: runtime, never itself.
    assert!(has_edge(&ci, &runtime, "iam.serviceAccounts.actAs"));
    assert!(!edges.iter().any(|(f, t, _)| f == t));
    // The owner holds actAs too.
    assert!(has_edge(&identity_uid("shop-prod", "user:alice@example.com"), &ci, "iam.serviceAccounts.actAs"));
    // A viewer does not.
    assert!(!edges.iter().any(|(f, _, _)| *f == identity_uid("shop-prod", "user:auditor@example.com")));
}

#[test]
fn owners_and_iam_admins_are_administrators() {
    let c = catalog();
    let why = is_admin(identity("shop-prod", "user:alice@example.com"), &c).expect("owner is an administrator");
    assert!(why.contains("resourcemanager.projects.setIamPolicy") && why.contains("shop-prod"), "{why}");
    assert!(is_admin(identity("shop-prod", "user:dave@example.com"), &c).is_none());
    assert!(is_admin(identity("shop-prod", "user:auditor@example.com"), &c).is_none());
    // roles/resourcemanager.organizationAdmin on the organization.
    assert!(is_admin(identity("shop-dev", "group:gcp-admins@example.com"), &c).is_some());
}

#[test]
fn unknown_roles_and_unplaced_policies_are_warnings_not_panics() {
    let text = concat!(
        r#"{"resource":"//storage.googleapis.com/orphan-bucket","policy":{"bindings":[{"role":"roles/storage.admin","members":["user:x@example.com"]}]}}"#,
        "\n",
        r#"{"resource":"projects/p1","policy":{"bindings":[{"role":"roles/doesNotExist","members":["user:y@example.com"]},{"role":"projects/p1/roles/lister","members":["user:z@example.com"]}]}}"#,
        "\n",
        // `gcloud iam roles list` prints roles without their permissions.
        r#"{"name":"projects/p1/roles/lister","title":"Lister","etag":"BwX=","description":"d"}"#,
        "\n"
    );
    let inv = parse_export("odd.jsonl", text.as_bytes()).unwrap();
    let r = entitlements(&inv, &catalog());
    assert!(r.warnings.iter().any(|w| w.contains("odd.jsonl#0") && w.contains("no project")), "{:?}", r.warnings);
    assert!(r.warnings.iter().any(|w| w.contains("roles/doesNotExist unknown")));
    let y = r.identities.iter().find(|g| g.arn == "gcp:projects/p1/user:y@example.com").unwrap();
    assert!(y.granted.is_empty() && !y.warnings.is_empty());
    let z = r.identities.iter().find(|g| g.arn == "gcp:projects/p1/user:z@example.com").unwrap();
    assert!(z.warnings.iter().any(|w| w.contains("without includedPermissions")), "{:?}", z.warnings);
}

#[test]
fn truncated_exports_never_panic() {
    let c = catalog();
    for (name, text) in FILES {
        for cut in (0..text.len()).step_by(13) {
            let parsed = parse_export(name, &text.as_bytes()[..cut]);
            // Entitlements read the predefined roles each time: over a sample of the cuts.
            if cut % 130 == 0
                && let Ok(inv) = parsed
            {
                let r = entitlements(&inv, &c);
                let _ = impersonation_edges(&inv, &r.identities, &c);
            }
        }
    }
}
