//! `salus user` and `salus role`: users, tenant roles and role assignments from the command
//! line, against the data directory or `--database-url`, as the tenant's system actor (which
//! may grant anything: whoever runs the CLI holds the database). Every change is an ordinary
//! command through the domain, in the tenant's event log like an API request's.

use crate::server::{self, system_ctx};
use clap::Subcommand;
use salus_domain::access::role::RoleInput;
use salus_domain::access::user::{Grant, Granter};
use salus_domain::access::{self, BUILTIN_ROLES, Role, RoleCommand, User, UserCommand};
use salus_domain::service::{Projected, Services};
use salus_kernel::TenantId;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum UserCommandArgs {
    /// Create a user.
    Create {
        #[arg(long)]
        username: String,
        /// Tenant name or id.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Roles, comma-separated (built-in: admin, provider, viewer, auditor; or the
        /// tenant's own); granted open-ended. `--roles ''` for none.
        #[arg(long, value_delimiter = ',', default_value = "viewer")]
        roles: Vec<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List the tenant's users with their active roles.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Disable a user: its tokens stop working.
    Disable {
        username: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommandArgs {
    /// List the built-in roles and the tenant's own, with their permissions.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Define a tenant role from permissions of the list (`GET /api/v1/permissions`).
    Create {
        name: String,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Grant a role to a user, optionally for a window (RFC 3339 instants).
    Grant {
        username: String,
        role: String,
        #[arg(long)]
        valid_from: Option<String>,
        #[arg(long)]
        valid_until: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Revoke an assignment for good (see `salus role assignments`).
    Revoke {
        username: String,
        assignment_id: Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Show a user's assignments and the status of each now.
    Assignments {
        username: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

fn instant(
    field: &str,
    v: Option<String>,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    v.map(|t| {
        salus_domain::clinical::interaction::parse_instant(field, &t)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .transpose()
}

async fn tenant(services: &Services, name: &str) -> anyhow::Result<TenantId> {
    Ok(server::find_tenant(services.store.as_ref(), name).await?.id)
}

fn status(a: &access::Assignment, now: chrono::DateTime<chrono::Utc>) -> &'static str {
    use access::user::AssignmentStatus as S;
    match a.status_at(now) {
        S::Pending => "pending",
        S::Active => "active",
        S::Expired => "expired",
        S::Revoked => "revoked",
    }
}

async fn execute_user(
    services: &Services,
    tenant: TenantId,
    id: Uuid,
    make: impl FnOnce(chrono::DateTime<chrono::Utc>) -> UserCommand,
) -> anyhow::Result<User> {
    services
        .execute::<User, _>(
            &system_ctx(tenant),
            id,
            None,
            move |_, now| Ok(make(now)),
            None,
        )
        .await
        .map(|c| c.state)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn user(services: &Services, command: UserCommandArgs) -> anyhow::Result<()> {
    match command {
        UserCommandArgs::Create {
            username,
            tenant: t,
            roles,
            display_name,
        } => {
            let t = server::find_tenant(services.store.as_ref(), &t).await?;
            let name = display_name.unwrap_or_else(|| username.clone());
            let roles: Vec<String> = roles.into_iter().filter(|r| !r.trim().is_empty()).collect();
            let id = server::create_user(services, t.id, &username, &name, roles).await?;
            println!("created user {username} ({id}) in tenant {}", t.name);
        }
        UserCommandArgs::List { tenant: t } => {
            let t = tenant(services, &t).await?;
            let now = services.now();
            let mut after = None;
            loop {
                let query = salus_store::SearchQuery {
                    resource_type: User::RESOURCE_TYPE.into(),
                    filters: Vec::new(),
                    after,
                    limit: 200,
                    newest_first: false,
                    order_by: None,
                };
                let page = services
                    .search::<User>(&system_ctx(t), &query)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for u in &page {
                    let roles: Vec<&str> = u.state.active_roles(now).collect();
                    println!(
                        "{}\t{}\t{}\t{}",
                        u.state.id,
                        u.state.username,
                        if u.state.active { "active" } else { "disabled" },
                        roles.join(",")
                    );
                }
                if page.len() < 200 {
                    break;
                }
                after = page.last().map(|u| u.row.id);
            }
        }
        UserCommandArgs::Disable {
            username,
            tenant: t,
        } => {
            let t = tenant(services, &t).await?;
            let u = server::find_user(services, t, &username).await?;
            execute_user(services, t, u.id, |_| UserCommand::Disable).await?;
            println!("disabled user {username}");
        }
    }
    Ok(())
}

pub async fn role(services: &Services, command: RoleCommandArgs) -> anyhow::Result<()> {
    match command {
        RoleCommandArgs::List { tenant: t } => {
            let t = tenant(services, &t).await?;
            for r in BUILTIN_ROLES {
                println!(
                    "{}\tbuilt-in\t{}",
                    r.name,
                    r.permissions().names().join(",")
                );
            }
            let query = salus_store::SearchQuery {
                resource_type: Role::RESOURCE_TYPE.into(),
                filters: Vec::new(),
                after: None,
                limit: 1000,
                newest_first: false,
                order_by: None,
            };
            for r in services
                .search::<Role>(&system_ctx(t), &query)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                let names: Vec<&str> = r.state.permissions.iter().map(|p| p.as_str()).collect();
                println!("{}\ttenant\t{}", r.state.name, names.join(","));
            }
        }
        RoleCommandArgs::Create {
            name,
            permissions,
            description,
            tenant: t,
        } => {
            let t = tenant(services, &t).await?;
            let id = Uuid::now_v7();
            let input = RoleInput {
                name,
                description,
                permissions,
            };
            let r = services
                .create::<Role, _>(
                    &system_ctx(t),
                    id,
                    move |_, _| {
                        Ok(RoleCommand::Define {
                            id,
                            input,
                            granter: Granter::system(),
                        })
                    },
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created role {} ({id})", r.state.name);
        }
        RoleCommandArgs::Grant {
            username,
            role,
            valid_from,
            valid_until,
            reason,
            tenant: t,
        } => {
            let t = tenant(services, &t).await?;
            let u = server::find_user(services, t, &username).await?;
            let role = role.trim().to_ascii_lowercase();
            let role_permissions = access::role_permissions(services, &system_ctx(t), &role)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let grant = Grant {
                assignment_id: Uuid::now_v7(),
                role: role.clone(),
                role_permissions,
                valid_from: instant("valid_from", valid_from)?,
                valid_until: instant("valid_until", valid_until)?,
                reason,
            };
            let aid = grant.assignment_id;
            execute_user(services, t, u.id, move |now| UserCommand::Grant {
                grant,
                granter: Granter::system(),
                now,
            })
            .await?;
            println!("granted {role} to {username}: assignment {aid}");
        }
        RoleCommandArgs::Revoke {
            username,
            assignment_id,
            reason,
            tenant: t,
        } => {
            let t = tenant(services, &t).await?;
            let u = server::find_user(services, t, &username).await?;
            execute_user(services, t, u.id, move |now| UserCommand::Revoke {
                assignment_id,
                reason,
                role_permissions: None,
                granter: Granter::system(),
                now,
            })
            .await?;
            println!("revoked assignment {assignment_id} of {username}");
        }
        RoleCommandArgs::Assignments {
            username,
            tenant: t,
        } => {
            let t = tenant(services, &t).await?;
            let u = server::find_user(services, t, &username).await?;
            let now = services.now();
            let at = |v: Option<chrono::DateTime<chrono::Utc>>| {
                v.map(|t| salus_kernel::event::format_instant(&t))
                    .unwrap_or_else(|| "-".into())
            };
            for a in &u.assignments {
                println!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    a.id,
                    a.role,
                    status(a, now),
                    at(a.valid_from),
                    at(a.valid_until),
                    a.revoked
                        .as_ref()
                        .map(|r| format!(
                            "\trevoked by {} at {}: {}",
                            r.by,
                            at(Some(r.at)),
                            r.reason
                        ))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
