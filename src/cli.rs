//! The command line: serving (the default), the container health check, and
//! managing user API keys in the session store.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{SecondsFormat, Utc};
use clap::{Parser, Subcommand};

use crate::api::keys::{KeyInfo, issue_key, parse_name};
use crate::auth;
use crate::config::{Settings, StorageKind};
use crate::domain::UserId;
use crate::store;

#[derive(Debug, Parser)]
#[command(
    name = "claude-agent-http",
    version,
    about = "A Claude coding agent behind a REST API, one working directory per user",
    after_help = "The config file defaults to $CLAUDE_AGENT_CONFIG, then ./config.yaml; \
                  environment variables override it (see README.md)."
)]
pub struct Cli {
    /// The config file to read.
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (what runs without a command).
    Serve,
    /// Exit 0 when the running service's /health answers healthy.
    Healthcheck,
    /// Make, list and revoke user API keys, in the configured session store.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key acting as one user; prints the key (shown only this once).
    Create {
        /// The user the key acts as.
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// A label for people, e.g. the app or machine using the key.
        #[arg(long)]
        name: Option<String>,
        /// How long the key is valid: 45m, 12h, 30d, 2w; never expires without it.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this user's keys.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
    },
    /// Revoke a key by its id: requests with it are refused from now on.
    Revoke {
        /// The key's id, as `keys list` shows it.
        key_id: String,
    },
}

/// Runs a `keys` command against the store the settings name.
pub async fn run_keys(settings: &Settings, action: KeysCommand) -> ExitCode {
    match keys(settings, action).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("claude-agent-http keys: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn keys(settings: &Settings, action: KeysCommand) -> Result<(), String> {
    if settings.session.storage == StorageKind::Memory {
        return Err(
            "the memory store keeps nothing between runs; keys need session.storage sqlite or postgresql"
                .into(),
        );
    }
    // Validate before opening the store: bad input changes nothing.
    let action = Checked::from(action)?;
    let store = store::open(settings)
        .await
        .map_err(|e| format!("cannot open the session store: {e}"))?;
    match action {
        Checked::Create {
            user,
            name,
            expires,
        } => {
            let expires_at = expires.map(|d| Utc::now() + d);
            let issued = issue_key(store.as_ref(), user, name, expires_at)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "key {} for user {} created{}; it is shown only now:",
                issued.record.id,
                issued.record.user_id,
                expires_at.map_or(String::new(), |at| format!(
                    ", expires {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                )),
            );
            println!("{}", issued.key);
        }
        Checked::List { user } => {
            let keys = store
                .list_keys(user.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{:<12}  {:<20}  {:<7}  {:<20}  {:<20}  NAME",
                "KEY_ID", "USER", "STATUS", "CREATED", "EXPIRES"
            );
            let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
            for key in keys {
                let info = KeyInfo::from(key);
                println!(
                    "{:<12}  {:<20}  {:<7}  {:<20}  {:<20}  {}",
                    info.key_id,
                    info.user_id,
                    info.status,
                    time(info.created_at),
                    info.expires_at.map_or("-".into(), time),
                    info.name.unwrap_or_default()
                );
            }
        }
        Checked::Revoke { key_id } => {
            let found = auth::is_key_id(&key_id)
                && store
                    .revoke_key(&key_id, Utc::now())
                    .await
                    .map_err(|e| e.to_string())?;
            if !found {
                return Err(format!("no key has the id '{key_id}'"));
            }
            eprintln!("key {key_id} revoked");
        }
    }
    Ok(())
}

/// A `keys` command with its arguments parsed.
enum Checked {
    Create {
        user: UserId,
        name: Option<String>,
        expires: Option<chrono::Duration>,
    },
    List {
        user: Option<UserId>,
    },
    Revoke {
        key_id: String,
    },
}

impl Checked {
    fn from(action: KeysCommand) -> Result<Self, String> {
        let user = |raw: &str| UserId::parse(raw).map_err(|e| format!("--user: {}", e.0));
        Ok(match action {
            KeysCommand::Create {
                user: raw,
                name,
                expires,
            } => Self::Create {
                user: user(&raw)?,
                name: parse_name(name).map_err(|e| format!("--name: {e}"))?,
                expires: expires
                    .as_deref()
                    .map(auth::parse_expiry)
                    .transpose()
                    .map_err(|e| format!("--expires: {e}"))?,
            },
            KeysCommand::List { user: raw } => Self::List {
                user: raw.as_deref().map(user).transpose()?,
            },
            KeysCommand::Revoke { key_id } => Self::Revoke { key_id },
        })
    }
}
