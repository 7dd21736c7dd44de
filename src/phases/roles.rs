//! `roles list|create|delete` and `databases list|create|delete`: a branch's roles and databases
//! are its NeonBranch's `spec.roles` (SCRAM verifiers) and `spec.databases`; the operator pushes
//! them to the branch's computes, and the proxy lets a role in with the same verifier. Deleted
//! ones are listed in `spec.droppedRoles`/`droppedDatabases`, which the computes drop
//! (compute_ctl's `delta_operations`) until a create of the same name takes them back. A
//! created role's password is generated here and kept only in a Secret
//! (`<prefix>-role-<branch>-<role>`), written before the role, so that no role exists whose
//! password is lost. Child branches made later inherit the role (and find its password there).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use neonctl_contract::resources::{DatabaseSpec, NeonBranch, RoleSpec};
use serde::Serialize;

use crate::cli::{DatabasesArgs, DatabasesCommand, Named, RolesArgs, RolesCommand};
use crate::config::Config;
use crate::exit;
use crate::output::{Printer, Table};
use crate::phases::branches::{Branches, Target, cluster, print_connection, usage};
use crate::phases::deploy::secrets;

/// The Secret holding the password of `role`, created on `branch`.
pub fn role_secret(prefix: &str, branch: &str, role: &str) -> String {
    format!("{prefix}-role-{branch}-{}", role.replace('_', "-"))
}

/// Role and database names: what a Secret name can carry and Postgres needs no quoting for.
fn check_name(kind: &str, name: &str) -> Result<(), anyhow::Error> {
    let mut chars = name.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first && name.len() <= 40 && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        Ok(())
    } else {
        Err(usage(format!(
            "{kind} name {name:?} is not valid: use at most 40 lowercase letters, digits and '_', starting with a letter or '_'"
        )))
    }
}

#[derive(Serialize)]
struct RoleRow {
    name: String,
    /// The Secret with its password, when this branch made it.
    password_secret: Option<String>,
}

pub async fn roles(args: &RolesArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    if let RolesCommand::Create { name, .. } | RolesCommand::Delete(Named { name, .. }) = &args.command {
        check_name("role", name)?;
    }
    let (client, namespace, state) = cluster(&args.on.cluster, config, state_dir).await?;
    let secrets_api: Api<SecretObject> = Api::namespaced(client.clone(), &namespace);
    let branches = Branches::new(client, namespace.clone(), Duration::from_secs(args.on.timeout));
    let branch = branches.get(&args.on.branch).await?.ok_or_else(|| branches.not_found(&args.on.branch))?;
    let on = &args.on.branch;
    match &args.command {
        RolesCommand::List => {
            let mut rows = Vec::new();
            for role in &branch.spec.roles {
                let secret = role_secret(&config.prefix, on, &role.name);
                let kept = secrets_api.get_opt(&secret).await.with_context(|| format!("reading Secret {namespace}/{secret}"))?;
                rows.push(RoleRow { name: role.name.clone(), password_secret: kept.map(|_| secret) });
            }
            let mut table = Table::new(&["ROLE", "PASSWORD SECRET"]);
            for row in &rows {
                table.row(vec![row.name.clone(), row.password_secret.clone().unwrap_or_else(|| "-".into())]);
            }
            printer.table("roles", &table, &rows);
        }
        RolesCommand::Create { name, show_password, plan } => {
            let secret = role_secret(&config.prefix, on, name);
            if branch.spec.roles.iter().any(|role| &role.name == name) {
                return Err(usage(format!("branch {on} already has a role {name}; `neonctl-aws roles list --branch {on}` shows them")));
            }
            if plan.plan {
                printer.result_line(&format!("create Secret {namespace}/{secret}: the password of role {name} (generated)"));
                printer.result_line(&format!("update NeonBranch {namespace}/{on}: add role {name} (its SCRAM verifier)"));
                return Ok(exit::SUCCESS);
            }
            // The password is kept before the role exists: a role is never left without one.
            let password = secrets::password(&ring::rand::SystemRandom::new())?;
            let object = SecretObject {
                metadata: ObjectMeta {
                    name: Some(secret.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some([("app.kubernetes.io/part-of".to_string(), "neon".to_string())].into()),
                    ..Default::default()
                },
                data: Some([(secrets::PASSWORD_KEY.to_string(), ByteString(password.0.clone().into_bytes()))].into()),
                ..Default::default()
            };
            let kept = match secrets_api.create(&PostParams::default(), &object).await {
                Ok(_) => password,
                // A create interrupted after the Secret: its password stays the role's.
                Err(kube::Error::Api(response)) if response.code == 409 => branches
                    .role_password(on, name, config)
                    .await?
                    .ok_or_else(|| anyhow!("Secret {namespace}/{secret} exists without a password: delete it and run again"))?,
                Err(e) => return Err(anyhow!(e).context(format!("creating Secret {namespace}/{secret}"))),
            };
            let mut roles = branch.spec.roles.clone();
            roles.push(RoleSpec { name: name.clone(), verifier: neonctl_contract::scram::verifier(&kept.0) });
            let dropped = without(&branch.spec.dropped_roles, name);
            update(&branches, &branch, serde_json::json!({"roles": roles, "droppedRoles": dropped})).await?;
            printer.result_line(&format!("role {name} on branch {on}: its password is in Secret {namespace}/{secret}"));
            let target = Target { branch: on.clone(), role: Some(name.clone()), ..Default::default() };
            let connection = branches.connection(&target, config, &state).await?;
            print_connection(printer, &connection, show_password.then_some(&kept), false);
        }
        RolesCommand::Delete(Named { name, plan }) => {
            if !branch.spec.roles.iter().any(|role| &role.name == name) {
                return Err(usage(format!("branch {on} has no role {name}")));
            }
            let owned: Vec<&str> = branch.spec.databases.iter().filter(|db| &db.owner == name).map(|db| db.name.as_str()).collect();
            if !owned.is_empty() {
                return Err(usage(format!("role {name} owns the database(s) {} on branch {on}: it stays", owned.join(", "))));
            }
            let secret = role_secret(&config.prefix, on, name);
            if plan.plan {
                printer.result_line(&format!("update NeonBranch {namespace}/{on}: remove role {name} (its computes drop it)"));
                printer.result_line(&format!("delete Secret {namespace}/{secret} (if this branch made it)"));
                return Ok(exit::SUCCESS);
            }
            let roles: Vec<&RoleSpec> = branch.spec.roles.iter().filter(|role| &role.name != name).collect();
            let dropped = with(&branch.spec.dropped_roles, name);
            update(&branches, &branch, serde_json::json!({"roles": roles, "droppedRoles": dropped})).await?;
            match secrets_api.delete(&secret, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(e) => return Err(anyhow!(e).context(format!("deleting Secret {namespace}/{secret}"))),
            }
            printer.result_line(&format!("role {name} removed from branch {on}: the proxy lets it in no more, its computes drop it"));
        }
    }
    Ok(exit::SUCCESS)
}

pub async fn databases(args: &DatabasesArgs, config: &Config, state_dir: &Path, printer: &Printer) -> anyhow::Result<u8> {
    if let DatabasesCommand::Create { name, .. } | DatabasesCommand::Delete(Named { name, .. }) = &args.command {
        check_name("database", name)?;
    }
    let (client, namespace, _) = cluster(&args.on.cluster, config, state_dir).await?;
    let branches = Branches::new(client, namespace.clone(), Duration::from_secs(args.on.timeout));
    let branch = branches.get(&args.on.branch).await?.ok_or_else(|| branches.not_found(&args.on.branch))?;
    let on = &args.on.branch;
    match &args.command {
        DatabasesCommand::List => {
            let mut table = Table::new(&["DATABASE", "OWNER"]);
            for db in &branch.spec.databases {
                table.row(vec![db.name.clone(), db.owner.clone()]);
            }
            printer.table("databases", &table, &branch.spec.databases);
        }
        DatabasesCommand::Create { name, owner, plan } => {
            if branch.spec.databases.iter().any(|db| &db.name == name) {
                return Err(usage(format!("branch {on} already has a database {name}")));
            }
            let owner = match owner {
                Some(owner) if branch.spec.roles.iter().any(|role| &role.name == owner) => owner.clone(),
                Some(owner) => {
                    return Err(usage(format!("branch {on} has no role {owner}: `neonctl-aws roles create {owner} --branch {on}`")));
                }
                None => branch
                    .spec
                    .roles
                    .first()
                    .map(|role| role.name.clone())
                    .ok_or_else(|| usage(format!("branch {on} has no role to own it")))?,
            };
            if plan.plan {
                printer.result_line(&format!("update NeonBranch {namespace}/{on}: add database {name} owned by {owner}"));
                return Ok(exit::SUCCESS);
            }
            let mut databases = branch.spec.databases.clone();
            databases.push(DatabaseSpec { name: name.clone(), owner: owner.clone() });
            let dropped = without(&branch.spec.dropped_databases, name);
            update(&branches, &branch, serde_json::json!({"databases": databases, "droppedDatabases": dropped})).await?;
            printer.result_line(&format!("database {name} on branch {on}, owned by {owner}"));
        }
        DatabasesCommand::Delete(Named { name, plan }) => {
            if !branch.spec.databases.iter().any(|db| &db.name == name) {
                return Err(usage(format!("branch {on} has no database {name}")));
            }
            if on == crate::phases::deploy::bootstrap::BRANCH && name == secrets::DATABASE {
                return Err(usage(format!(
                    "database {name} on branch {on} is the deployment's own (`deploy` and `status` use it): it stays"
                )));
            }
            if plan.plan {
                printer.result_line(&format!("update NeonBranch {namespace}/{on}: remove database {name} (its computes drop it)"));
                return Ok(exit::SUCCESS);
            }
            let databases: Vec<&DatabaseSpec> = branch.spec.databases.iter().filter(|db| &db.name != name).collect();
            let dropped = with(&branch.spec.dropped_databases, name);
            update(&branches, &branch, serde_json::json!({"databases": databases, "droppedDatabases": dropped})).await?;
            printer.result_line(&format!("database {name} removed from branch {on}: its computes drop it"));
        }
    }
    Ok(exit::SUCCESS)
}

/// `names` and `name`, once.
fn with(names: &[String], name: &str) -> Vec<String> {
    let mut names = without(names, name);
    names.push(name.to_string());
    names
}

/// `names` without `name`.
fn without(names: &[String], name: &str) -> Vec<String> {
    names.iter().filter(|n| *n != name).cloned().collect()
}

/// Merges `spec` into the branch (resourceVersion-checked: a concurrent change is a conflict,
/// not lost) and waits until the operator has given it to the computes.
async fn update(branches: &Branches, branch: &NeonBranch, spec: serde_json::Value) -> anyhow::Result<()> {
    let name = branch.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({"metadata": {"resourceVersion": branch.metadata.resource_version}, "spec": spec});
    match branches.api().patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 => {
            return Err(usage(format!("branch {name} changed meanwhile; run the same command again")));
        }
        Err(e) => return Err(anyhow!(e).context(format!("updating NeonBranch {name}"))),
    }
    branches.wait_ready(&name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_database_names_fit_secrets_and_need_no_quoting() {
        for good in ["app", "_x", "app_2", &"a".repeat(40)] {
            assert!(check_name("role", good).is_ok(), "{good}");
        }
        for bad in ["", "App", "2app", "app-1", "a b", &"a".repeat(41)] {
            assert!(check_name("role", bad).is_err(), "{bad}");
        }
        assert_eq!(role_secret("neon", "dev", "app_ro"), "neon-role-dev-app-ro");
    }
}
