//! The curated operations the generator logs. Azure: only operations an Activity Log records (writes,
//! deletes, POST actions; reads are not logged) and that a built-in role names literally. GCP: audit-log
//! `methodName`s from the google-cloudevents service catalog, each with the one permission it checks,
//! a permission of some predefined role.

use crate::multicloud::world::AzKind;

/// What an Azure operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AzTarget {
    Vm,
    Disk,
    /// A new snapshot of a disk, in the disk's resource group.
    Snapshot,
    Storage,
    /// A blob container of a storage account.
    Container,
    Nsg,
    NsgRule,
    Vnet,
    Site,
    Aks,
    ResourceGroup,
    Deployment,
    RoleAssignment,
    /// The subscription's Activity Log diagnostic setting.
    DiagnosticSetting,
}

impl AzTarget {
    /// The resource kind the operation needs, if it acts on a resource.
    pub(crate) fn kind(self) -> Option<AzKind> {
        match self {
            AzTarget::Vm => Some(AzKind::Vm),
            AzTarget::Disk | AzTarget::Snapshot => Some(AzKind::Disk),
            AzTarget::Storage | AzTarget::Container => Some(AzKind::Storage),
            AzTarget::Nsg | AzTarget::NsgRule => Some(AzKind::Nsg),
            AzTarget::Vnet => Some(AzKind::Vnet),
            AzTarget::Site => Some(AzKind::Site),
            AzTarget::Aks => Some(AzKind::Aks),
            AzTarget::ResourceGroup | AzTarget::Deployment | AzTarget::RoleAssignment | AzTarget::DiagnosticSetting => {
                None
            }
        }
    }
}

pub(crate) struct AzOp {
    /// Spelled as the built-in role that names it.
    pub(crate) op: &'static str,
    pub(crate) target: AzTarget,
    /// Logged as a `Start` and a `Success` (or `Failure`) record sharing a correlation id, as
    /// long-running ARM operations are; otherwise one `Success` record.
    pub(crate) pair: bool,
    /// The HTTP status of the success record.
    pub(crate) status: &'static str,
    /// Part of normal activity (otherwise only an attack emits it).
    pub(crate) normal: bool,
}

const fn az(op: &'static str, target: AzTarget, pair: bool, status: &'static str) -> AzOp {
    AzOp { op, target, pair, status, normal: true }
}

pub(crate) const AZ_OPS: &[AzOp] = &[
    az("Microsoft.Compute/virtualMachines/write", AzTarget::Vm, true, "OK"),
    az("Microsoft.Compute/virtualMachines/start/action", AzTarget::Vm, true, "Accepted"),
    az("Microsoft.Compute/virtualMachines/restart/action", AzTarget::Vm, true, "Accepted"),
    az("Microsoft.Compute/virtualMachines/deallocate/action", AzTarget::Vm, true, "Accepted"),
    az("Microsoft.Compute/disks/write", AzTarget::Disk, true, "OK"),
    az("Microsoft.Compute/snapshots/write", AzTarget::Snapshot, true, "Created"),
    az("Microsoft.Storage/storageAccounts/write", AzTarget::Storage, true, "OK"),
    az("Microsoft.Storage/storageAccounts/listKeys/action", AzTarget::Storage, false, "OK"),
    az("Microsoft.Storage/storageAccounts/blobServices/containers/write", AzTarget::Container, true, "OK"),
    az(
        "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        AzTarget::Storage,
        false,
        "OK",
    ),
    az("Microsoft.Network/networkSecurityGroups/write", AzTarget::Nsg, true, "OK"),
    az("Microsoft.Network/networkSecurityGroups/securityRules/write", AzTarget::NsgRule, true, "Created"),
    az("Microsoft.Network/virtualNetworks/write", AzTarget::Vnet, true, "OK"),
    az("Microsoft.Resources/subscriptions/resourceGroups/write", AzTarget::ResourceGroup, false, "OK"),
    az("Microsoft.Resources/deployments/write", AzTarget::Deployment, true, "Created"),
    az("Microsoft.Resources/deployments/validate/action", AzTarget::Deployment, false, "OK"),
    az("Microsoft.Authorization/roleAssignments/write", AzTarget::RoleAssignment, true, "Created"),
    az("Microsoft.Web/sites/write", AzTarget::Site, true, "OK"),
    az("Microsoft.Web/sites/restart/Action", AzTarget::Site, false, "OK"),
    az("Microsoft.ContainerService/managedClusters/write", AzTarget::Aks, true, "OK"),
    az("Microsoft.ContainerService/managedClusters/listClusterUserCredential/action", AzTarget::Aks, false, "OK"),
    // Attack only: no built-in role names it (`*` and `Microsoft.Insights/diagnosticSettings/*`
    // reach it); the catalog lists it among its extra operations.
    AzOp {
        op: "Microsoft.Insights/diagnosticSettings/delete",
        target: AzTarget::DiagnosticSetting,
        pair: true,
        status: "OK",
        normal: false,
    },
    // A real Compute operation that neither a built-in role nor the catalog's extra operations name:
    // a few records stand in for the operations an Activity Log holds that the catalog lacks (the
    // engine must skip and count them). Emitted now and then instead of a VM write.
    AzOp {
        op: "Microsoft.Compute/virtualMachines/performMaintenance/action",
        target: AzTarget::Vm,
        pair: true,
        status: "Accepted",
        normal: false,
    },
];

/// Index of the Azure operation `op` in [`AZ_OPS`].
pub(crate) fn az_op(op: &str) -> usize {
    AZ_OPS.iter().position(|o| o.op == op).unwrap_or(0)
}

/// What a GCP call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GTarget {
    Project,
    Bucket,
    Object,
    Instance,
    ServiceAccount,
    Secret,
    Topic,
    RunService,
}

/// Which Cloud Audit Log a call is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Log {
    /// `cloudaudit.googleapis.com%2Factivity` (admin writes, always on).
    Activity,
    /// `cloudaudit.googleapis.com%2Fdata_access` (reads and data access, when enabled).
    DataAccess,
}

pub(crate) struct GcpCall {
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) permission: &'static str,
    pub(crate) target: GTarget,
    pub(crate) log: Log,
    pub(crate) normal: bool,
}

const fn g(
    service: &'static str,
    method: &'static str,
    permission: &'static str,
    target: GTarget,
    log: Log,
) -> GcpCall {
    GcpCall { service, method, permission, target, log, normal: true }
}

const GCS: &str = "storage.googleapis.com";
const IAM: &str = "iam.googleapis.com";
const CRM: &str = "cloudresourcemanager.googleapis.com";
const GCE: &str = "compute.googleapis.com";
const SM: &str = "secretmanager.googleapis.com";
const LOGGING: &str = "logging.googleapis.com";
use GTarget as T;
use Log::{Activity as A, DataAccess as D};

pub(crate) const GCP_CALLS: &[GcpCall] = &[
    g(GCS, "storage.objects.get", "storage.objects.get", T::Object, D),
    g(GCS, "storage.objects.list", "storage.objects.list", T::Bucket, D),
    g(GCS, "storage.objects.create", "storage.objects.create", T::Object, D),
    g(GCS, "storage.buckets.list", "storage.buckets.list", T::Project, D),
    g(GCS, "storage.buckets.get", "storage.buckets.get", T::Bucket, D),
    g(GCS, "storage.getIamPermissions", "storage.buckets.getIamPolicy", T::Bucket, D),
    g(IAM, "google.iam.admin.v1.ListServiceAccounts", "iam.serviceAccounts.list", T::Project, D),
    g(IAM, "google.iam.admin.v1.GetServiceAccount", "iam.serviceAccounts.get", T::ServiceAccount, D),
    g(CRM, "GetIamPolicy", "resourcemanager.projects.getIamPolicy", T::Project, D),
    g(CRM, "google.cloud.resourcemanager.v3.Projects.GetProject", "resourcemanager.projects.get", T::Project, D),
    g(
        "bigquery.googleapis.com",
        "google.cloud.bigquery.v2.JobService.InsertJob",
        "bigquery.jobs.create",
        T::Project,
        D,
    ),
    g(GCE, "v1.compute.instances.list", "compute.instances.list", T::Project, D),
    g(GCE, "v1.compute.instances.get", "compute.instances.get", T::Instance, D),
    g(GCE, "v1.compute.instances.start", "compute.instances.start", T::Instance, A),
    g(GCE, "v1.compute.instances.stop", "compute.instances.stop", T::Instance, A),
    g(GCE, "v1.compute.firewalls.insert", "compute.firewalls.create", T::Project, A),
    g(
        SM,
        "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
        "secretmanager.versions.access",
        T::Secret,
        D,
    ),
    g(
        SM,
        "google.cloud.secretmanager.v1.SecretManagerService.ListSecrets",
        "secretmanager.secrets.list",
        T::Project,
        D,
    ),
    g(LOGGING, "google.logging.v2.ConfigServiceV2.ListSinks", "logging.sinks.list", T::Project, D),
    g(LOGGING, "google.logging.v2.LoggingServiceV2.ListLogEntries", "logging.logEntries.list", T::Project, D),
    g("pubsub.googleapis.com", "google.pubsub.v1.Publisher.CreateTopic", "pubsub.topics.create", T::Topic, A),
    g(
        "cloudfunctions.googleapis.com",
        "google.cloud.functions.v1.CloudFunctionsService.ListFunctions",
        "cloudfunctions.functions.list",
        T::Project,
        D,
    ),
    g("run.googleapis.com", "google.cloud.run.v1.Services.ListServices", "run.services.list", T::Project, D),
    g("run.googleapis.com", "google.cloud.run.v2.Services.GetService", "run.services.get", T::RunService, D),
    // Attack only: they change the snapshot (a new key, a public bucket).
    GcpCall {
        service: IAM,
        method: "google.iam.admin.v1.CreateServiceAccountKey",
        permission: "iam.serviceAccountKeys.create",
        target: T::ServiceAccount,
        log: A,
        normal: false,
    },
    GcpCall {
        service: GCS,
        method: "storage.setIamPermissions",
        permission: "storage.buckets.setIamPolicy",
        target: T::Bucket,
        log: A,
        normal: false,
    },
];

/// Index of the GCP call `method` in [`GCP_CALLS`].
pub(crate) fn gcp_call(method: &str) -> usize {
    GCP_CALLS.iter().position(|c| c.method == method).unwrap_or(0)
}
