//! Access: users of Salus, the roles they hold and the permissions roles grant.
//!
//! - [`PERMISSIONS`] is the one list of permissions, each a domain-scoped verb
//!   (`patients:read`, `orders:write:medication`); a [`Permission`] exists only for a name on
//!   it, and a [`PermissionSet`] is a bit set over it (cheap to intersect per request).
//! - [`BUILTIN_ROLES`] are Viewer, Provider, Admin and Auditor: fixed, never stored, never
//!   editable. Tenants define their own roles ([`role::Role`]) from the same list.
//! - A user holds roles through [`user::Assignment`]s, each valid from/until an instant and
//!   revocable for good; [`user::User::active_roles`] decides at an instant which count.
//! - [`care`] holds care relationships (care-team assignments, encounters) and the
//!   tenant's policy on whether reads need one.
//! - [`scopes`] parses SMART on FHIR scopes, which narrow a token below its roles.
//!
//! This module decides; it never reads the clock or the store (the service passes both in).

pub mod care;
pub mod role;
pub mod scopes;
pub mod user;

pub use role::{Role, RoleCommand, RoleEvent};
pub use user::{Assignment, User, UserCommand, UserEvent};

use serde::{Deserialize, Serialize};

/// Every permission Salus knows, with what it allows: the one list, documented in the
/// README's permission table (a test keeps the two equal).
pub const PERMISSIONS: &[(&str, &str)] = &[
    (
        "patients:read",
        "read patient demographics, history and past states",
    ),
    (
        "patients:write",
        "register patients, change their details and lifecycle",
    ),
    (
        "interactions:read",
        "read interactions and the tenant's outcomes",
    ),
    (
        "interactions:write",
        "record, amend and withdraw interactions",
    ),
    ("outcomes:write", "define and retire the tenant's outcomes"),
    ("clinicians:read", "read clinicians"),
    (
        "clinicians:write",
        "register clinicians and change their status",
    ),
    ("places:read", "read departments and locations"),
    (
        "places:write",
        "create departments and locations and change their status",
    ),
    ("encounters:read", "read encounters"),
    (
        "encounters:write",
        "schedule encounters and move them through their lifecycle",
    ),
    ("observations:read", "read observations"),
    (
        "observations:write",
        "record, amend and withdraw observations",
    ),
    ("procedures:read", "read procedures"),
    ("procedures:write", "record and withdraw procedures"),
    ("conditions:read", "read conditions"),
    (
        "conditions:write",
        "record conditions and change their status",
    ),
    ("allergies:read", "read allergies"),
    (
        "allergies:write",
        "record allergies and change their status",
    ),
    ("medical_records:read", "read medical records"),
    (
        "medical_records:write",
        "open and soft-delete medical records",
    ),
    ("notes:read", "read clinical notes"),
    ("notes:write", "write, amend and sign clinical notes"),
    ("attachments:read", "read attachments and their contents"),
    ("attachments:write", "attach files to medical records"),
    (
        "consent_templates:read",
        "read consent templates and their versions",
    ),
    (
        "consent_templates:write",
        "create, edit, publish and version consent templates",
    ),
    (
        "consents:read",
        "read patients' consents and their signed documents",
    ),
    (
        "consents:write",
        "create patients' consents, acknowledge clauses, sign and revoke them",
    ),
    (
        "fhir_resources:read",
        "read FHIR resources that Salus keeps as documents (every R4 type without a module of its own)",
    ),
    (
        "fhir_resources:write",
        "create, update and delete FHIR resources that Salus keeps as documents",
    ),
    (
        "theater:book",
        "book operating theatre sessions (no endpoint yet: the theatre module)",
    ),
    (
        "orders:write:medication",
        "place medication orders (no endpoint yet: the orders module)",
    ),
    ("users:read", "list users and their role assignments"),
    ("users:write", "create and disable users"),
    ("roles:read", "list roles and what they grant"),
    (
        "roles:write",
        "define and change the tenant's own roles and its care-relationship policy",
    ),
    (
        "roles:grant",
        "grant and revoke role assignments (only of roles whose permissions the granter holds)",
    ),
    (
        "imports:write",
        "bulk-import files and read import jobs (with the kind's write permission)",
    ),
    (
        "exports:read",
        "bulk-export a kind's records, or FHIR resources with `$export` (with the kind's or each type's read permission)",
    ),
    (
        "care_team:write",
        "put users on a patient's care team and end their assignments",
    ),
    (
        "audit:read",
        "read the audit trail (events with states before and after), tree heads and proofs, and the data-access log",
    ),
];

/// One permission of [`PERMISSIONS`] (its index there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(u8);

/// A name that is not on [`PERMISSIONS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission '{0}'")]
pub struct UnknownPermission(pub String);

impl Permission {
    /// The permission named `name` (exactly, as listed).
    pub fn parse(name: &str) -> Result<Self, UnknownPermission> {
        PERMISSIONS
            .iter()
            .position(|(p, _)| *p == name)
            .map(|i| Permission(i as u8))
            .ok_or_else(|| UnknownPermission(name.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        PERMISSIONS[self.0 as usize].0
    }

    /// The domain it belongs to: `patients` of `patients:read`.
    pub fn domain(self) -> &'static str {
        self.as_str().split(':').next().unwrap_or("")
    }

    /// Every permission, in list order.
    pub fn all() -> impl Iterator<Item = Permission> {
        (0..PERMISSIONS.len()).map(|i| Permission(i as u8))
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Permission::parse(&name).map_err(serde::de::Error::custom)
    }
}

// The set is a u64: the list must fit in it.
const _: () = assert!(PERMISSIONS.len() <= 64);

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PermissionSet(u64);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission of the list.
    pub fn all() -> Self {
        Permission::all().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p.0) != 0
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= 1 << p.0;
    }

    pub fn union(self, other: Self) -> Self {
        PermissionSet(self.0 | other.0)
    }

    pub fn intersect(self, other: Self) -> Self {
        PermissionSet(self.0 & other.0)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::all().filter(move |p| self.contains(*p))
    }

    /// The names, in list order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }

    /// The permission named `name` is in the set (an unknown name never is).
    pub fn allows(self, name: &str) -> bool {
        Permission::parse(name).is_ok_and(|p| self.contains(p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut s = PermissionSet::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// A built-in role: fixed by Salus, the same in every tenant, not editable.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRole {
    pub name: &'static str,
    pub description: &'static str,
    /// The permissions; `None` is every permission (admin).
    permissions: Option<&'static [&'static str]>,
}

impl BuiltinRole {
    pub fn permissions(&self) -> PermissionSet {
        match self.permissions {
            None => PermissionSet::all(),
            Some(names) => names
                .iter()
                .filter_map(|n| Permission::parse(n).ok())
                .collect(),
        }
    }
}

/// The role whose grant needs the granter to hold it too.
pub const ADMIN: &str = "admin";

const VIEWER_PERMISSIONS: &[&str] = &[
    "patients:read",
    "interactions:read",
    "clinicians:read",
    "places:read",
    "encounters:read",
    "observations:read",
    "procedures:read",
    "conditions:read",
    "allergies:read",
    "medical_records:read",
    "notes:read",
    "attachments:read",
    "consent_templates:read",
    "consents:read",
    "fhir_resources:read",
];

const PROVIDER_PERMISSIONS: &[&str] = &[
    "patients:read",
    "patients:write",
    "interactions:read",
    "interactions:write",
    "clinicians:read",
    "places:read",
    "encounters:read",
    "encounters:write",
    "observations:read",
    "observations:write",
    "procedures:read",
    "procedures:write",
    "conditions:read",
    "conditions:write",
    "allergies:read",
    "allergies:write",
    "medical_records:read",
    "medical_records:write",
    "notes:read",
    "notes:write",
    "attachments:read",
    "attachments:write",
    "consent_templates:read",
    "consents:read",
    "consents:write",
    "fhir_resources:read",
    "fhir_resources:write",
    "theater:book",
    "orders:write:medication",
];

/// Viewer, Provider, Admin and Auditor.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: ADMIN,
        description: "everything, including users, roles, bulk files and the audit trail",
        permissions: None,
    },
    BuiltinRole {
        name: "provider",
        description: "read and write clinical data; read clinicians and places",
        permissions: Some(PROVIDER_PERMISSIONS),
    },
    BuiltinRole {
        name: "viewer",
        description: "read clinical data",
        permissions: Some(VIEWER_PERMISSIONS),
    },
    BuiltinRole {
        name: "auditor",
        description: "read the audit trail, users and roles; no patient data",
        permissions: Some(&["audit:read", "users:read", "roles:read"]),
    },
];

/// The built-in role named `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

/// A role name: 1–64 of `a-z 0-9 . _ -`, starting with a letter.
pub fn parse_role_name(s: &str) -> Result<String, salus_kernel::DomainError> {
    let n = s.trim().to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(n)
    } else {
        Err(salus_kernel::DomainError::invalid(
            "name",
            "a role name is 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter",
        ))
    }
}

/// The permissions of the role named `name` in the tenant: a built-in role's, or the
/// tenant's own role's (`None`: no such role).
pub async fn role_permissions(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    name: &str,
) -> Result<Option<PermissionSet>, crate::service::ServiceError> {
    if let Some(b) = builtin(name) {
        return Ok(Some(b.permissions()));
    }
    Ok(find_role(services, ctx, name)
        .await?
        .map(|r| r.state.permission_set()))
}

/// The tenant's own role named `name`.
pub async fn find_role(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    name: &str,
) -> Result<Option<crate::service::Current<Role>>, crate::service::ServiceError> {
    let Ok(name) = parse_role_name(name) else {
        return Ok(None);
    };
    match services
        .store
        .unique_owner(ctx, role::NAME_SCOPE, &name)
        .await?
    {
        Some(id) => services.load::<Role>(ctx, id).await,
        None => Ok(None),
    }
}

/// The README's permission table, as a test renders it from [`PERMISSIONS`] and
/// [`BUILTIN_ROLES`].
pub fn permission_table() -> String {
    let mut out = String::from("| permission | allows |");
    for r in BUILTIN_ROLES {
        out.push_str(&format!(" {} |", r.name));
    }
    out.push_str("\n|---|---|");
    for _ in BUILTIN_ROLES {
        out.push_str("---|");
    }
    out.push('\n');
    for p in Permission::all() {
        out.push_str(&format!(
            "| `{}` | {} |",
            p.as_str(),
            PERMISSIONS[p.0 as usize].1
        ));
        for r in BUILTIN_ROLES {
            out.push_str(if r.permissions().contains(p) {
                " ✓ |"
            } else {
                " |"
            });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(role: &str) -> PermissionSet {
        builtin(role).map(BuiltinRole::permissions).unwrap()
    }

    #[test]
    fn every_builtin_role_names_only_known_permissions() {
        for r in BUILTIN_ROLES {
            for p in r.permissions.unwrap_or(&[]) {
                assert!(Permission::parse(p).is_ok(), "{} names {p}", r.name);
            }
        }
    }

    #[test]
    fn permission_names_are_domain_scoped_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (p, _) in PERMISSIONS {
            assert!(seen.insert(*p), "{p} twice");
            let parts: Vec<&str> = p.split(':').collect();
            assert!((2..=3).contains(&parts.len()), "{p}");
            assert!(
                parts
                    .iter()
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
                "{p}"
            );
        }
    }

    #[test]
    fn admin_holds_everything_and_the_others_hold_what_their_job_needs() {
        assert_eq!(set("admin"), PermissionSet::all());
        for p in [
            "encounters:write",
            "observations:write",
            "notes:write",
            "theater:book",
            "orders:write:medication",
        ] {
            assert!(set("provider").allows(p), "provider lacks {p}");
        }
        for p in ["outcomes:write", "roles:grant", "users:write", "audit:read"] {
            assert!(!set("provider").allows(p), "provider holds {p}");
        }
        assert!(!set("viewer").allows("patients:write"));
        assert!(set("viewer").is_subset(set("provider")));
        assert!(!set("auditor").allows("patients:read"));
        assert!(set("auditor").allows("audit:read"));
    }

    #[test]
    fn sets_intersect_and_unknown_names_are_never_allowed() {
        let a = set("provider").intersect(set("auditor"));
        assert!(a.is_empty());
        assert!(!PermissionSet::all().allows("patients:delete"));
        assert_eq!(
            Permission::parse("patients:reed"),
            Err(UnknownPermission("patients:reed".into()))
        );
        let p: Permission = serde_json::from_str("\"notes:write\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"notes:write\"");
        assert!(serde_json::from_str::<Permission>("\"notes:wrote\"").is_err());
    }

    #[test]
    fn the_readme_permission_table_is_current() {
        let readme = include_str!("../../../../README.md");
        let table = permission_table();
        assert!(
            readme.contains(&table),
            "README.md's permission table is stale; replace it with:\n\n{table}"
        );
    }
}
