//! Access: users of Salus, the roles they hold and the permissions roles grant.
//!
//! This is the first cut: built-in roles with a fixed permission list. Tenant-defined roles,
//! time-bound assignments and SMART scopes come with the access-control work.

pub mod user;

pub use user::{User, UserCommand, UserEvent};

/// A permission: a domain-scoped verb such as `patients:read`.
pub type Permission = &'static str;

/// Every permission Salus knows, documented in one place.
pub const PERMISSIONS: &[(Permission, &str)] = &[
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
    ("interactions:write", "record interactions with patients"),
    ("outcomes:write", "define and retire the tenant's outcomes"),
    ("clinicians:read", "read clinicians"),
    ("places:read", "read departments and locations"),
    (
        "places:write",
        "create departments and locations and change their status",
    ),
    (
        "clinicians:write",
        "register clinicians and change their status",
    ),
    ("encounters:read", "read encounters"),
    ("observations:read", "read observations"),
    (
        "observations:write",
        "record, amend and withdraw observations",
    ),
    ("procedures:read", "read procedures"),
    ("medical_records:read", "read medical records"),
    (
        "medical_records:write",
        "open and soft-delete medical records",
    ),
    ("notes:read", "read clinical notes"),
    ("attachments:read", "read attachments and their contents"),
    ("attachments:write", "attach files to medical records"),
    ("notes:write", "write, amend and sign clinical notes"),
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
    ("procedures:write", "record and withdraw procedures"),
    (
        "encounters:write",
        "schedule encounters and move them through their lifecycle",
    ),
    ("users:write", "create users and change their roles"),
    (
        "imports:write",
        "bulk-import files and read import jobs (with the kind's write permission)",
    ),
    (
        "exports:read",
        "bulk-export a kind's records (with the kind's read permission)",
    ),
    ("audit:read", "read the event log, tree heads and proofs"),
];

/// Built-in roles and what they grant.
pub const ROLES: &[(&str, &[Permission])] = &[
    (
        "admin",
        &[
            "patients:read",
            "patients:write",
            "interactions:read",
            "interactions:write",
            "outcomes:write",
            "clinicians:read",
            "clinicians:write",
            "places:read",
            "places:write",
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
            "users:write",
            "imports:write",
            "exports:read",
            "audit:read",
        ],
    ),
    (
        "provider",
        &[
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
        ],
    ),
    (
        "viewer",
        &[
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
        ],
    ),
    ("auditor", &["audit:read"]),
];

pub fn role_exists(role: &str) -> bool {
    ROLES.iter().any(|(r, _)| *r == role)
}

/// Whether any of `roles` grants `permission`.
pub fn grants(roles: &[String], permission: &str) -> bool {
    roles.iter().any(|r| {
        ROLES
            .iter()
            .find(|(name, _)| name == r)
            .is_some_and(|(_, perms)| perms.contains(&permission))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_grants_only_known_permissions() {
        for (_, perms) in ROLES {
            for p in *perms {
                assert!(PERMISSIONS.iter().any(|(k, _)| k == p), "{p}");
            }
        }
    }

    #[test]
    fn every_permission_is_held_by_admin_and_providers_do_clinical_work() {
        for (p, _) in PERMISSIONS {
            assert!(grants(&["admin".into()], p), "admin lacks {p}");
        }
        for p in [
            "encounters:write",
            "observations:write",
            "procedures:write",
            "allergies:write",
            "conditions:write",
            "interactions:write",
            "clinicians:read",
        ] {
            assert!(grants(&["provider".into()], p), "provider lacks {p}");
        }
        assert!(!grants(&["provider".into()], "outcomes:write"));
    }

    #[test]
    fn viewer_cannot_write_and_admin_can() {
        assert!(!grants(&["viewer".into()], "patients:write"));
        assert!(grants(&["viewer".into(), "admin".into()], "patients:write"));
        assert!(!grants(&[], "patients:read"));
    }
}
