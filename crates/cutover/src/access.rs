//! `cutover tokens` (named credentials) and `cutover audit` (the audit trail).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use control::access::{AuditEntry, CreateTokenRequest, CreatedToken, TokenView, utc_text};

use crate::client::Client;
use crate::render;

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a named API credential and print its secret, once. It holds one binding: a role
    /// (or permissions one by one) on the resources its scopes name.
    Create {
        /// What the audit trail and `tokens list` call it, e.g. ci-web.
        name: String,
        /// viewer, deployer, admin, or a role cutover.yaml declares in access.roles
        /// (docs/access.md).
        #[arg(long, conflicts_with = "permission", required_unless_present = "permission")]
        role: Option<String>,
        /// A permission instead of a role (repeat it), e.g. --permission rollback.
        #[arg(long)]
        permission: Vec<String>,
        /// Where the binding holds, a glob over names (repeat it): `web/*` for application
        /// web's deployment groups, `web` for the pipeline or repository web. Default: `*`,
        /// everything.
        #[arg(long)]
        scope: Vec<String>,
        /// When it stops working, from now: 90d, 12h. Default: never.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Every named credential: its bindings, expiry and last use (never its secret).
    List,
    /// Revoke a credential; it is refused from the next request on.
    Revoke { name: String },
}

/// `cutover audit`: filters of the audit trail.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this actor: `token:NAME`, `bootstrap`, `local`, `anonymous`, `unknown-token`,
    /// `hook:DEPLOYMENT/EXECUTION`, `webhook`.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action: a permission's name (deploy, rollback, apply, …).
    #[arg(long)]
    action: Option<String>,
    /// Only this resource, as the trail shows it (e.g. `deployment group web/web-prod`).
    #[arg(long)]
    resource: Option<String>,
    /// Only entries of this last while: 1h, 7d.
    #[arg(long)]
    since: Option<String>,
    /// The newest this many entries.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// One JSON object per line, for a log pipeline.
    #[arg(long)]
    jsonl: bool,
}

pub fn tokens(client: &Client, command: TokensCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create { name, role, permission, scope, expires } => {
            let expires_in_ms = expires
                .map(|text| {
                    model::parse_duration(&text)
                        .map(|d| d.as_millis() as u64)
                        .with_context(|| format!("--expires {text}"))
                })
                .transpose()?;
            let request = CreateTokenRequest {
                name,
                role,
                permissions: permission,
                scopes: scope,
                expires_in_ms,
            };
            let created: CreatedToken = client.post("/v1/tokens", &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "credential {} created ({}); its secret, shown only now:\n{}\n\
                     use it with --token or CUTOVER_TOKEN",
                    created.token.name,
                    created.token.bindings.join("; "),
                    created.secret
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List => {
            let list: Vec<TokenView> = client.get("/v1/tokens")?;
            render::print(json, &list, |list| token_table(list))
        }
        TokensCommand::Revoke { name } => {
            let _: serde_json::Value =
                client.delete(&format!("/v1/tokens/{name}"), &serde_json::json!({}))?;
            println!("credential {name} revoked");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn token_table(list: &[TokenView]) -> String {
    let when = |ms: Option<u64>, none: &str| ms.map_or_else(|| none.to_string(), utc_text);
    render::table(
        &["NAME", "BINDINGS", "CREATED", "EXPIRES", "LAST USED"],
        list.iter()
            .map(|t| {
                let name = match &t.user {
                    Some(user) => format!("{} (sso: {user})", t.name),
                    None => t.name.clone(),
                };
                vec![
                    name,
                    t.bindings.join("; "),
                    utc_text(t.created_at),
                    when(t.expires_at, "never"),
                    when(t.last_used_at, "never"),
                ]
            })
            .collect(),
    )
}

pub fn audit(client: &Client, args: AuditArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut query = vec![format!("limit={}", args.limit)];
    for (key, value) in
        [("actor", args.actor), ("action", args.action), ("resource", args.resource)]
    {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(&value)));
        }
    }
    if let Some(since) = args.since {
        let back = model::parse_duration(&since).with_context(|| format!("--since {since}"))?;
        // The control plane's clock says where "1h ago" is.
        query.push(format!("within_ms={}", back.as_millis()));
    }
    let entries: Vec<AuditEntry> = client.get(&format!("/v1/audit?{}", query.join("&")))?;
    if args.jsonl {
        for entry in &entries {
            println!("{}", serde_json::to_string(entry)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    render::print(json, &entries, |entries| audit_table(entries))
}

fn audit_table(entries: &[AuditEntry]) -> String {
    render::table(
        &["TIME", "ACTOR", "ACTION", "RESOURCE", "SOURCE", "OUTCOME", "REQUEST"],
        entries
            .iter()
            .map(|e| {
                let request = e.detail["request"].as_str().unwrap_or_default().to_string();
                vec![
                    utc_text(e.at),
                    e.actor.clone(),
                    e.action.clone(),
                    e.resource.clone(),
                    e.source.clone(),
                    e.outcome.clone(),
                    request,
                ]
            })
            .collect(),
    )
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::cli::{UpFlags, UpFlagsError, check_up_flags};

    #[test]
    fn plain_http_beyond_loopback_needs_tls_or_the_explicit_flag() {
        let flags = |listen: &str, tls, allow_plaintext_beyond_loopback| UpFlags {
            listen: listen.parse().unwrap(),
            lb_admin: "127.0.0.1:7401".parse().unwrap(),
            lb_threads: 1,
            tls,
            allow_plaintext_beyond_loopback,
        };
        let listen = "0.0.0.0:7400".parse().unwrap();
        assert_eq!(
            check_up_flags(&flags("0.0.0.0:7400", false, false)),
            Err(UpFlagsError::PlaintextBeyondLoopback(listen))
        );
        assert_eq!(check_up_flags(&flags("0.0.0.0:7400", true, false)), Ok(()));
        assert_eq!(check_up_flags(&flags("0.0.0.0:7400", false, true)), Ok(()));
        assert_eq!(check_up_flags(&flags("127.0.0.1:7400", false, false)), Ok(()));
        assert_eq!(check_up_flags(&flags("[::1]:7400", false, false)), Ok(()));
    }
}
