//! Settings: built-in defaults, then `config.yaml`, then environment variables
//! (environment wins), validated once at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use crate::mcp::McpServerConfig;
use crate::plugins::PluginConfig;
use crate::skills::SettingSource;
use serde::{Deserialize, Deserializer};

/// Where the config file is looked for when neither `--config` nor
/// `CLAUDE_AGENT_CONFIG` names one. A missing default file is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "./config.yaml";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {key}: {problem}")]
    Invalid {
        key: String,
        value: String,
        problem: String,
    },
    #[error("cannot read config file {path}: {problem}")]
    File { path: String, problem: String },
}

impl ConfigError {
    fn invalid(key: &str, value: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Memory,
    Sqlite,
    #[serde(alias = "postgres")]
    Postgresql,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgresql => "postgresql",
        }
    }
}

impl FromStr for StorageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Self::Memory),
            "sqlite" => Ok(Self::Sqlite),
            "postgresql" | "postgres" => Ok(Self::Postgresql),
            _ => Err("expected one of memory, sqlite, postgresql".into()),
        }
    }
}

/// Whether Bash commands are confined to the user's directory (see `sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Confine when the kernel supports Landlock, else warn and run unconfined.
    #[default]
    Auto,
    /// Confine, and refuse to start when that is impossible.
    On,
    /// Never confine.
    Off,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

impl FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("expected one of auto, on, off".into()),
        }
    }
}

/// Whether requests must carry an API key (see `api::auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone who reaches the port has full access: for a deployment behind
    /// a gateway that authenticates.
    None,
    /// Every request but `/`, `/health`, `/docs` and `/openapi.json` needs a key.
    ApiKey,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey => "api_key",
        }
    }
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "api_key" => Ok(Self::ApiKey),
            _ => Err("expected one of none, api_key".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret from config or environment. `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Secret(Option<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        if value.is_empty() {
            Self(None)
        } else {
            Self(Some(SecretString::from(value)))
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    pub fn expose(&self) -> Option<&str> {
        self.0.as_ref().map(|s| s.expose_secret())
    }

    pub fn secret(&self) -> Option<SecretString> {
        self.0.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "[redacted]"
        } else {
            "[unset]"
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value: Option<String> = Option::deserialize(deserializer)?;
        Ok(value.map(Self::new).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UserSettings {
    pub base_dir: PathBuf,
    pub auto_create_dir: bool,
    /// The service user's Claude directory (`~/.claude`): `CLAUDE.md`,
    /// `commands/` and `settings.json` of the `user` setting source; see
    /// [`UserSettings::claude_home`].
    pub claude_home: Option<PathBuf>,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self {
            base_dir: PathBuf::from("./data/claude-users"),
            auto_create_dir: true,
            claude_home: None,
        }
    }
}

impl UserSettings {
    /// `user.claude_home`, else `$CLAUDE_CONFIG_DIR` (Claude Code's own
    /// override), else `$HOME/.claude` of the service's process.
    pub fn claude_home(&self) -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        self.claude_home
            .clone()
            .or_else(|| var("CLAUDE_CONFIG_DIR").map(PathBuf::from))
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".claude")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    pub storage: StorageKind,
    /// Idle seconds before a session expires; 0 keeps sessions forever.
    pub ttl: i64,
    pub sqlite_path: PathBuf,
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_database: String,
    pub pg_user: String,
    pub pg_password: Secret,
    pub pg_max_connections: u32,
    /// How long the first PostgreSQL connection is retried, so that
    /// container start order does not matter.
    pub pg_connect_retry_secs: u64,
    /// How long a session's stream frames stay replayable at `/events`.
    pub event_retention: EventRetention,
}

/// Which of a session's stored frames are kept (`session.event_retention`);
/// they go with the session in any case.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EventRetention {
    /// The frames (and results) of this many newest turns are kept; at least 1.
    pub turns: u32,
    /// Frames older than this many seconds are deleted; 0 keeps them for
    /// as long as their turn is kept.
    pub max_age_secs: u64,
}

impl Default for EventRetention {
    fn default() -> Self {
        Self {
            turns: 20,
            max_age_secs: 7 * 24 * 3600,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            storage: StorageKind::Sqlite,
            ttl: 3600,
            sqlite_path: PathBuf::from("./data/db/sessions.db"),
            pg_host: "localhost".into(),
            pg_port: 5432,
            pg_database: "claude_agent".into(),
            pg_user: "postgres".into(),
            pg_password: Secret::default(),
            pg_max_connections: 20,
            pg_connect_retry_secs: 60,
            event_retention: EventRetention::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    pub host: String,
    pub port: u16,
    /// `none` or `api_key`. Unset: `api_key` as soon as any key exists (an
    /// admin key here, or a user key in the store), else `none`.
    pub auth: Option<AuthMode>,
    /// Admin keys: full access to every user's sessions and to `/api/v1/keys`.
    pub api_keys: Vec<Secret>,
    /// Origins whose web pages may call the API; none by default.
    pub cors_origins: Vec<String>,
    /// 0 means no limit.
    pub max_sessions: u64,
    /// 0 means no limit.
    pub max_sessions_per_user: u64,
    pub max_concurrent_requests: usize,
    pub max_body_bytes: usize,
    /// Seconds running turns may go on after SIGTERM before they are
    /// cancelled and saved; below Docker's 10 s stop timeout so the save
    /// happens before the SIGKILL.
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's head, from connecting or
    /// from its first byte after an idle keep-alive period.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body.
    pub body_timeout_secs: u64,
    /// Seconds a keep-alive connection may sit idle between requests.
    pub idle_timeout_secs: u64,
    /// Open connections at once; more are refused with 503. 0 derives it
    /// from the open-file limit (see `serve::connection_cap`).
    pub max_connections: usize,
    /// Which per-session options (`POST`/`PATCH /api/v1/sessions`) clients
    /// may set, by key (see [`crate::options::OVERRIDE_KEYS`]). Every value
    /// may only tighten what the `defaults` allow, whichever keys are listed.
    pub session_overrides: Vec<String>,
    /// Largest body `PUT /api/v1/sessions/{id}/files/{path}` takes.
    pub max_upload_bytes: usize,
    /// Most attachments one chat message may carry.
    pub max_attachments: usize,
    /// Largest image attachment, decoded (the Messages API takes 5 MiB of
    /// base64, 3.75 MiB decoded).
    pub max_image_bytes: usize,
    /// Largest PDF attachment, decoded (the Messages API takes requests up
    /// to 32 MB in all).
    pub max_document_bytes: usize,
    /// Most bytes, decoded, of all attachments of one message together.
    /// A chat body may be this much larger (base64) than `max_body_bytes`.
    pub max_attachments_bytes: usize,
    /// Lets `/chat` take a `callback_url` the turn's result is POSTed to.
    pub allow_callbacks: bool,
    /// Signs callback bodies (HMAC-SHA256); required with `allow_callbacks`.
    pub callback_secret: Secret,
}

impl ApiSettings {
    /// The largest body `/api/v1/chat` and `/chat/stream` take: the usual
    /// limit for the JSON, plus attachments at their base64 size.
    pub fn max_chat_body_bytes(&self) -> usize {
        self.max_body_bytes
            .saturating_add(self.max_attachments_bytes.div_ceil(3).saturating_mul(4))
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            auth: None,
            api_keys: Vec::new(),
            cors_origins: Vec::new(),
            max_sessions: 0,
            max_sessions_per_user: 0,
            max_concurrent_requests: 64,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 8,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            idle_timeout_secs: 60,
            max_connections: 0,
            session_overrides: crate::options::DEFAULT_OVERRIDES
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            max_upload_bytes: 25 * 1024 * 1024,
            max_attachments: 20,
            max_image_bytes: crate::media::MAX_API_IMAGE_BYTES,
            max_document_bytes: 20 * 1024 * 1024,
            max_attachments_bytes: 32 * 1024 * 1024,
            allow_callbacks: false,
            callback_secret: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AnthropicSettings {
    pub api_key: Secret,
    pub auth_token: Secret,
    pub base_url: String,
    /// Caps `max_tokens` of each model call; unset, the model table's
    /// output limit is used.
    pub max_tokens: Option<u32>,
    pub max_retries: u32,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    /// Marks prompt-cache breakpoints on the tools, the system prompt and
    /// the newest messages of every call.
    pub prompt_caching: bool,
    pub cache_ttl: CacheTtl,
}

/// How long a prompt-cache entry lives upstream (`anthropic.cache_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum CacheTtl {
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

impl CacheTtl {
    /// The API's spelling: `5m` or `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveMinutes => "5m",
            Self::OneHour => "1h",
        }
    }
}

impl Default for AnthropicSettings {
    fn default() -> Self {
        Self {
            api_key: Secret::default(),
            auth_token: Secret::default(),
            base_url: "https://api.anthropic.com".into(),
            max_tokens: None,
            max_retries: 2,
            connect_timeout_secs: 10,
            request_timeout_secs: 600,
            prompt_caching: true,
            cache_ttl: CacheTtl::default(),
        }
    }
}

impl AnthropicSettings {
    /// The TTL of the cache breakpoints calls carry; `None` with caching off.
    pub fn cache(&self) -> Option<CacheTtl> {
        self.prompt_caching.then_some(self.cache_ttl)
    }

    pub fn is_configured(&self) -> bool {
        self.api_key.is_set() || self.auth_token.is_set()
    }
}

/// `defaults.system_prompt`: a string replaces the service's default prompt;
/// `{preset: claude_code, append: "..."}` keeps it and adds the text (the
/// Agent SDK's `{type: preset, ...}` spelling is accepted too).
#[derive(Debug, Clone, PartialEq)]
pub enum SystemPromptConfig {
    Replace(String),
    Preset { append: Option<String> },
}

/// The one preset there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PromptPreset {
    ClaudeCode,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PromptKind {
    Preset,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetPrompt {
    #[serde(rename = "type", default)]
    _kind: Option<PromptKind>,
    #[serde(rename = "preset")]
    _preset: PromptPreset,
    #[serde(default)]
    append: Option<String>,
}

impl<'de> Deserialize<'de> for SystemPromptConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SystemPromptConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a prompt (a string) or {preset: claude_code, append: \"...\"}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SystemPromptConfig::Replace(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let preset =
                    PresetPrompt::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SystemPromptConfig::Preset {
                    append: preset.append.filter(|a| !a.trim().is_empty()),
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AgentDefaults {
    pub system_prompt: Option<SystemPromptConfig>,
    pub permission_mode: String,
    /// Permission rules (Claude Code syntax) that approve calls; a
    /// non-empty list also limits the tools offered to those it names.
    pub allowed_tools: Vec<String>,
    /// Rules whose calls need a person's approval, asked for over the API.
    pub ask_tools: Vec<String>,
    /// Rules whose calls are refused; a bare tool name hides the tool.
    pub disallowed_tools: Vec<String>,
    pub setting_sources: Vec<SettingSource>,
    pub model: String,
    pub max_turns: u32,
    pub max_budget_usd: Option<f64>,
    /// Extended thinking budget of each model call; 0 turns thinking off.
    pub thinking_budget_tokens: u32,
    /// The model a turn continues on when `model` stays overloaded.
    pub fallback_model: Option<String>,
    /// A small, fast model for side work (`WebFetch` answers its prompt
    /// over a page with it); unset, such tools return their raw material.
    pub small_model: Option<String>,
    /// Seconds a turn waits for a person to answer a permission request or
    /// a question before the call is denied.
    pub permission_timeout_secs: u64,
}

impl Default for AgentDefaults {
    fn default() -> Self {
        Self {
            system_prompt: None,
            permission_mode: "bypassPermissions".into(),
            allowed_tools: Vec::new(),
            ask_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            setting_sources: vec![SettingSource::User, SettingSource::Project],
            model: "claude-sonnet-4-6".into(),
            max_turns: 50,
            max_budget_usd: None,
            thinking_budget_tokens: 0,
            fallback_model: None,
            small_model: None,
            permission_timeout_secs: 300,
        }
    }
}

/// USD per million tokens, used to price turns and enforce budgets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_write: f64,
    #[serde(default)]
    pub cache_read: f64,
    /// Writes with the 1-hour TTL; twice the input price when unset.
    #[serde(default)]
    pub cache_write_1h: Option<f64>,
}

impl ModelPrice {
    /// The price of one million tokens written to the cache with `ttl`.
    pub fn cache_write_for(&self, ttl: CacheTtl) -> f64 {
        match ttl {
            CacheTtl::FiveMinutes => self.cache_write,
            CacheTtl::OneHour => self.cache_write_1h.unwrap_or(self.input * 2.0),
        }
    }
}

/// What a model can take and give (`models` in the configuration).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ModelLimits {
    /// Tokens of prompt plus output the model accepts.
    pub context_window: u64,
    /// The largest `max_tokens` the model accepts.
    pub max_output_tokens: u32,
}

/// Used for a model id no configured prefix matches.
pub const FALLBACK_LIMITS: ModelLimits = ModelLimits {
    context_window: 200_000,
    max_output_tokens: 32_000,
};

fn default_models() -> BTreeMap<String, ModelLimits> {
    let limits = |max_output_tokens: u32| ModelLimits {
        context_window: 200_000,
        max_output_tokens,
    };
    BTreeMap::from([
        ("claude-3-haiku".into(), limits(4_096)),
        ("claude-3-5-haiku".into(), limits(8_192)),
        ("claude-3-5-sonnet".into(), limits(8_192)),
        ("claude-3-7-sonnet".into(), limits(64_000)),
        ("claude-haiku-4".into(), limits(64_000)),
        ("claude-sonnet-4".into(), limits(64_000)),
        ("claude-sonnet-4-6".into(), limits(128_000)),
        ("claude-sonnet-5".into(), limits(128_000)),
        ("claude-opus-4".into(), limits(32_000)),
        ("claude-opus-4-5".into(), limits(64_000)),
        ("claude-opus-4-6".into(), limits(128_000)),
        ("claude-opus-4-7".into(), limits(128_000)),
        ("claude-opus-4-8".into(), limits(128_000)),
        ("claude-opus-5".into(), limits(128_000)),
    ])
}

/// How the agent manages its context window (`context`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ContextSettings {
    /// Compact before the next model call once a call's prompt passed this
    /// fraction of the model's context window.
    pub auto_compact_at: f64,
    /// After compaction, at most this fraction of the window is kept
    /// verbatim (the newest messages); the rest is summarised.
    pub keep_recent: f64,
    /// Longest summary a compaction may write, in tokens.
    pub summary_max_tokens: u32,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            auto_compact_at: 0.8,
            keep_recent: 0.25,
            summary_max_tokens: 8_000,
        }
    }
}

fn default_pricing() -> BTreeMap<String, ModelPrice> {
    let price = |input: f64, output: f64| ModelPrice {
        input,
        output,
        cache_write: input * 1.25,
        cache_read: input * 0.1,
        cache_write_1h: Some(input * 2.0),
    };
    BTreeMap::from([
        ("claude-opus-4".into(), price(15.0, 75.0)),
        ("claude-opus-4-5".into(), price(5.0, 25.0)),
        ("claude-opus-4-6".into(), price(5.0, 25.0)),
        ("claude-opus-4-7".into(), price(5.0, 25.0)),
        ("claude-opus-4-8".into(), price(5.0, 25.0)),
        ("claude-opus-5".into(), price(5.0, 25.0)),
        ("claude-sonnet-5".into(), price(3.0, 15.0)),
        ("claude-sonnet-4".into(), price(3.0, 15.0)),
        ("claude-haiku-4".into(), price(1.0, 5.0)),
        ("claude-3-5-haiku".into(), price(0.8, 4.0)),
    ])
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

/// `GET /metrics` (Prometheus text format).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// When set, scrapes must send `Authorization: Bearer <token>`.
    pub token: Secret,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            token: Secret::default(),
        }
    }
}

/// Largest file Write and Edit handle (`tools.max_file_bytes`): 16 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What TCP a confined command may use (`tools.network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Any connection.
    Full,
    /// Anything but the service's own port and the session store's port.
    #[default]
    NoLocalServices,
    /// No TCP connections or listening sockets at all.
    None,
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "no_local_services" => Ok(Self::NoLocalServices),
            "none" => Ok(Self::None),
            _ => Err("expected one of full, no_local_services, none".into()),
        }
    }
}

/// How MCP servers beyond `mcp_servers` are treated (`mcp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct McpSettings {
    /// The stdio servers a session's own `.mcp.json` names (with the
    /// `project` setting source). A repository can name any command, so
    /// they are off unless allowed; allowed ones run per session, confined
    /// like its Bash commands.
    pub project_servers: ProjectServers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectServers {
    Allow,
    #[default]
    Deny,
}

/// Which user confined commands run as (`tools.command_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandUser {
    /// `per_user` when the service may switch users (it runs as root) and
    /// the kernel lets it; the service's own user otherwise.
    #[default]
    Auto,
    /// Each user's commands run as a user id of their own, never root; the
    /// service refuses to start when it cannot switch users.
    PerUser,
    /// Commands run as the service's own user.
    Service,
}

impl FromStr for CommandUser {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "per_user" => Ok(Self::PerUser),
            "service" => Ok(Self::Service),
            _ => Err("expected one of auto, per_user, service".into()),
        }
    }
}

/// The numeric user ids handed out to users' commands
/// (`tools.command_uids`): `first` up to, not including, `first + count`.
/// Each user keeps the one it was given (recorded under `user.base_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CommandUids {
    pub first: u32,
    pub count: u32,
}

impl Default for CommandUids {
    fn default() -> Self {
        Self {
            first: 1_000_000,
            count: 1_000_000,
        }
    }
}

/// Resource limits for each confined command (`tools.limits`); 0 leaves a
/// limit unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CommandLimits {
    /// Address space per process, in MiB.
    pub memory_mb: u64,
    /// CPU time per process, in seconds.
    pub cpu_secs: u64,
    /// Processes (and threads) the service's user may have, counted by the
    /// kernel across all of that user's processes.
    pub processes: u64,
    /// Largest file a command may write, in MiB.
    pub file_size_mb: u64,
}

impl Default for CommandLimits {
    fn default() -> Self {
        Self {
            memory_mb: 8 * 1024,
            cpu_secs: 900,
            processes: 4096,
            file_size_mb: 4 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ToolSettings {
    pub sandbox: SandboxMode,
    /// The `claude-agent-http` binary that confines Bash commands; the
    /// running executable when unset. Tests, which run the service inside a
    /// test binary, point it at the real one.
    pub sandbox_exe: Option<PathBuf>,
    /// Write and Edit refuse files larger than this, so one call cannot
    /// hold gigabytes in the service's memory.
    pub max_file_bytes: u64,
    pub network: NetworkMode,
    pub limits: CommandLimits,
    pub command_user: CommandUser,
    pub command_uids: CommandUids,
    /// Directories every confined command may read and execute from, on
    /// top of the system's and the toolchains on the service's PATH.
    pub sandbox_read_paths: Vec<PathBuf>,
    /// A tool result longer than this many tokens (about four characters
    /// each) is cut, with a note telling the model how to read the rest.
    pub max_result_tokens: u64,
    pub web_fetch: WebFetchSettings,
}

/// The `WebFetch` tool (`tools.web_fetch`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebFetchSettings {
    pub enabled: bool,
    /// Lets pages on loopback, private, link-local and cloud-metadata
    /// addresses be fetched (off: the service's own network stays out of
    /// the model's reach).
    pub allow_private_networks: bool,
    /// When not empty, only these domains (and their subdomains).
    pub allowed_domains: Vec<String>,
    /// Never these domains (and their subdomains).
    pub blocked_domains: Vec<String>,
    /// Largest response body read, in bytes.
    pub max_bytes: u64,
    pub timeout_secs: u64,
}

impl Default for WebFetchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_networks: false,
            allowed_domains: Vec::new(),
            blocked_domains: Vec::new(),
            max_bytes: 10 * 1024 * 1024,
            timeout_secs: 30,
        }
    }
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            sandbox: SandboxMode::default(),
            sandbox_exe: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            network: NetworkMode::default(),
            limits: CommandLimits::default(),
            command_user: CommandUser::default(),
            command_uids: CommandUids::default(),
            sandbox_read_paths: Vec::new(),
            max_result_tokens: 25_000,
            web_fetch: WebFetchSettings::default(),
        }
    }
}

/// A subagent type declared in the configuration, as a `.claude/agents`
/// file would declare it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// When the model should pick this type; shown in the `Agent` tool.
    pub description: String,
    /// The subagent's system prompt.
    pub prompt: String,
    /// The tools it may use; absent means the parent's, without `Agent`.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// `sonnet`, `opus`, `haiku`, a full model id, or `inherit` (absent:
    /// the parent's model).
    #[serde(default)]
    pub model: Option<String>,
}

/// Per-user spending limits and per-key turn rates, counted in the store so
/// every instance sharing it enforces the same totals. 0 means no limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QuotaSettings {
    /// Tokens (input, output, cache writes and reads) one user may spend per UTC day.
    pub per_user_daily_tokens: u64,
    /// US dollars one user may spend per UTC day.
    pub per_user_daily_usd: f64,
    /// Turns one API key (or, without keys, one user) may start per minute.
    pub turns_per_minute: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub user: UserSettings,
    pub session: SessionSettings,
    pub api: ApiSettings,
    pub anthropic: AnthropicSettings,
    pub defaults: AgentDefaults,
    pub tools: ToolSettings,
    /// Model-id prefix → price; the longest matching prefix wins.
    pub pricing: BTreeMap<String, ModelPrice>,
    /// Model-id prefix → context window and output limit; the longest
    /// matching prefix wins.
    pub models: BTreeMap<String, ModelLimits>,
    pub context: ContextSettings,
    /// MCP servers by name; their tools appear as `mcp__<name>__<tool>`.
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    pub mcp: McpSettings,
    /// Local plugin folders bundling skills and MCP servers.
    pub plugins: Vec<PluginConfig>,
    /// Subagent types the `Agent` tool may start, by name, beside the
    /// built-in `general-purpose` and the `.claude/agents/*.md` files; a
    /// name here wins over a file of the same name.
    pub agents: BTreeMap<String, AgentConfig>,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub quotas: QuotaSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            user: UserSettings::default(),
            session: SessionSettings::default(),
            api: ApiSettings::default(),
            anthropic: AnthropicSettings::default(),
            defaults: AgentDefaults::default(),
            tools: ToolSettings::default(),
            pricing: default_pricing(),
            models: default_models(),
            context: ContextSettings::default(),
            mcp_servers: BTreeMap::new(),
            mcp: McpSettings::default(),
            plugins: Vec::new(),
            agents: BTreeMap::new(),
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
            quotas: QuotaSettings::default(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Port,
    Int,
    /// A non-negative number, fractions allowed.
    Float,
    Bool,
    /// Comma-separated values, blanks dropped.
    List,
    Auth,
    Storage,
    Sandbox,
    Network,
    CommandUser,
    /// Text added to the default system prompt (`defaults.system_prompt`
    /// becomes `{preset: claude_code, append: <text>}`).
    AppendPrompt,
}

/// Environment variable → settings key. Later rows win over earlier ones
/// (`CLAUDE_AGENT_API_PORT` over `API_PORT`).
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("CLAUDE_AGENT_USER_BASE_DIR", "user.base_dir", Kind::Text),
    (
        "CLAUDE_AGENT_USER_CLAUDE_HOME",
        "user.claude_home",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_USER_AUTO_CREATE_DIR",
        "user.auto_create_dir",
        Kind::Bool,
    ),
    (
        "CLAUDE_AGENT_SESSION_STORAGE",
        "session.storage",
        Kind::Storage,
    ),
    ("CLAUDE_AGENT_SESSION_TTL", "session.ttl", Kind::Int),
    (
        "CLAUDE_AGENT_SESSION_SQLITE_PATH",
        "session.sqlite_path",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_SESSION_PG_HOST",
        "session.pg_host",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_SESSION_PG_PORT",
        "session.pg_port",
        Kind::Port,
    ),
    (
        "CLAUDE_AGENT_SESSION_PG_DATABASE",
        "session.pg_database",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_SESSION_PG_USER",
        "session.pg_user",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_SESSION_PG_PASSWORD",
        "session.pg_password",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_SESSION_EVENT_RETENTION_TURNS",
        "session.event_retention.turns",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_SESSION_EVENT_RETENTION_MAX_AGE_SECS",
        "session.event_retention.max_age_secs",
        Kind::Int,
    ),
    ("CLAUDE_AGENT_API_HOST", "api.host", Kind::Text),
    (
        "CLAUDE_AGENT_METRICS_ENABLED",
        "metrics.enabled",
        Kind::Bool,
    ),
    ("CLAUDE_AGENT_METRICS_TOKEN", "metrics.token", Kind::Text),
    (
        "CLAUDE_AGENT_API_ALLOW_CALLBACKS",
        "api.allow_callbacks",
        Kind::Bool,
    ),
    (
        "CLAUDE_AGENT_API_CALLBACK_SECRET",
        "api.callback_secret",
        Kind::Text,
    ),
    ("CLAUDE_AGENT_API_AUTH", "api.auth", Kind::Auth),
    ("CLAUDE_AGENT_API_KEYS", "api.api_keys", Kind::List),
    (
        "CLAUDE_AGENT_API_CORS_ORIGINS",
        "api.cors_origins",
        Kind::List,
    ),
    (
        "CLAUDE_AGENT_QUOTAS_PER_USER_DAILY_TOKENS",
        "quotas.per_user_daily_tokens",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_QUOTAS_PER_USER_DAILY_USD",
        "quotas.per_user_daily_usd",
        Kind::Float,
    ),
    (
        "CLAUDE_AGENT_QUOTAS_TURNS_PER_MINUTE",
        "quotas.turns_per_minute",
        Kind::Int,
    ),
    ("API_PORT", "api.port", Kind::Port),
    ("CLAUDE_AGENT_API_PORT", "api.port", Kind::Port),
    (
        "CLAUDE_AGENT_API_MAX_SESSIONS",
        "api.max_sessions",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_SESSIONS_PER_USER",
        "api.max_sessions_per_user",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_CONCURRENT_REQUESTS",
        "api.max_concurrent_requests",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_SHUTDOWN_GRACE_SECS",
        "api.shutdown_grace_secs",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_HEADER_TIMEOUT_SECS",
        "api.header_timeout_secs",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_BODY_TIMEOUT_SECS",
        "api.body_timeout_secs",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_IDLE_TIMEOUT_SECS",
        "api.idle_timeout_secs",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_CONNECTIONS",
        "api.max_connections",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_SESSION_OVERRIDES",
        "api.session_overrides",
        Kind::List,
    ),
    (
        "CLAUDE_AGENT_API_MAX_UPLOAD_BYTES",
        "api.max_upload_bytes",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_ATTACHMENTS",
        "api.max_attachments",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_IMAGE_BYTES",
        "api.max_image_bytes",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_DOCUMENT_BYTES",
        "api.max_document_bytes",
        Kind::Int,
    ),
    (
        "CLAUDE_AGENT_API_MAX_ATTACHMENTS_BYTES",
        "api.max_attachments_bytes",
        Kind::Int,
    ),
    ("ANTHROPIC_API_KEY", "anthropic.api_key", Kind::Text),
    ("ANTHROPIC_AUTH_TOKEN", "anthropic.auth_token", Kind::Text),
    ("ANTHROPIC_BASE_URL", "anthropic.base_url", Kind::Text),
    ("ANTHROPIC_MODEL", "defaults.model", Kind::Text),
    (
        "CLAUDE_AGENT_SYSTEM_PROMPT",
        "defaults.system_prompt",
        Kind::Text,
    ),
    (
        "CLAUDE_AGENT_APPEND_SYSTEM_PROMPT",
        "defaults.system_prompt",
        Kind::AppendPrompt,
    ),
    (
        "CLAUDE_AGENT_DEFAULTS_PERMISSION_TIMEOUT_SECS",
        "defaults.permission_timeout_secs",
        Kind::Int,
    ),
    ("CLAUDE_AGENT_TOOLS_SANDBOX", "tools.sandbox", Kind::Sandbox),
    ("CLAUDE_AGENT_TOOLS_NETWORK", "tools.network", Kind::Network),
    (
        "CLAUDE_AGENT_TOOLS_COMMAND_USER",
        "tools.command_user",
        Kind::CommandUser,
    ),
    (
        "CLAUDE_AGENT_TOOLS_WEB_FETCH_ALLOW_PRIVATE_NETWORKS",
        "tools.web_fetch.allow_private_networks",
        Kind::Bool,
    ),
    (
        "CLAUDE_AGENT_TOOLS_MAX_FILE_BYTES",
        "tools.max_file_bytes",
        Kind::Int,
    ),
    ("CLAUDE_AGENT_LOG_FORMAT", "log.format", Kind::Text),
];

impl Settings {
    /// Loads settings from `path` (or the default path) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, |name| std::env::var(name).ok())
    }

    /// Same as [`Settings::load`], with the environment supplied by the caller.
    pub fn load_from(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match env("CLAUDE_AGENT_CONFIG") {
                Some(p) => (PathBuf::from(p), true),
                None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
            },
        };
        if required && !file.exists() {
            return Err(ConfigError::File {
                path: file.display().to_string(),
                problem: "no such file".into(),
            });
        }
        builder = builder.add_source(
            config::File::from(file.as_path())
                .format(config::FileFormat::Yaml)
                .required(required),
        );
        for (var, key, kind) in ENV_KEYS {
            let Some(raw) = env(var) else { continue };
            // An empty variable means "not set": compose files pass `${X:-}` through.
            if raw.is_empty() {
                continue;
            }
            builder = apply_env(builder, var, key, *kind, raw)?;
        }
        let merged = builder.build().map_err(|e| ConfigError::File {
            path: file.display().to_string(),
            problem: e.to_string(),
        })?;
        let settings: Settings = merged.try_deserialize().map_err(|e| ConfigError::File {
            path: file.display().to_string(),
            problem: e.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, agent) in &self.agents {
            let key = format!("agents.{name}");
            if name.trim().is_empty() || name.contains(':') {
                return Err(ConfigError::invalid(
                    &key,
                    name,
                    "a subagent's name must not be empty nor contain ':'",
                ));
            }
            if agent.description.trim().is_empty() || agent.prompt.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &key,
                    name,
                    "a subagent needs a non-empty description and prompt",
                ));
            }
        }
        let uids = self.tools.command_uids;
        if uids.first == 0 || uids.count == 0 || uids.first.checked_add(uids.count).is_none() {
            return Err(ConfigError::invalid(
                "tools.command_uids",
                format!("{}+{}", uids.first, uids.count),
                "first must be above 0 (root), count above 0, and first + count within 32 bits",
            ));
        }
        if self.tools.max_file_bytes == 0 {
            return Err(ConfigError::invalid(
                "tools.max_file_bytes",
                0,
                "must be a positive number of bytes",
            ));
        }
        if self.session.ttl < 0 {
            return Err(ConfigError::invalid(
                "session.ttl",
                self.session.ttl,
                "must be 0 (never expire) or a positive number of seconds",
            ));
        }
        if self.session.event_retention.turns == 0 {
            return Err(ConfigError::invalid(
                "session.event_retention.turns",
                0,
                "must be at least 1 (the running turn's frames are always kept)",
            ));
        }
        if self.api.allow_callbacks && !self.api.callback_secret.is_set() {
            return Err(ConfigError::invalid(
                "api.callback_secret",
                "",
                "must be set when api.allow_callbacks is true: callbacks are signed with it",
            ));
        }
        if self.api.max_concurrent_requests == 0 {
            return Err(ConfigError::invalid(
                "api.max_concurrent_requests",
                0,
                "must be at least 1",
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "api.max_body_bytes",
                self.api.max_body_bytes,
                "must be at least 1024",
            ));
        }
        for (key, bytes) in [
            ("api.max_upload_bytes", self.api.max_upload_bytes),
            ("api.max_image_bytes", self.api.max_image_bytes),
            ("api.max_document_bytes", self.api.max_document_bytes),
            ("api.max_attachments_bytes", self.api.max_attachments_bytes),
        ] {
            if bytes == 0 {
                return Err(ConfigError::invalid(key, 0, "must be at least 1 byte"));
            }
        }
        for (key, secs) in [
            ("api.header_timeout_secs", self.api.header_timeout_secs),
            ("api.body_timeout_secs", self.api.body_timeout_secs),
            ("api.idle_timeout_secs", self.api.idle_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::invalid(key, 0, "must be at least 1 second"));
            }
        }
        if self.defaults.permission_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "defaults.permission_timeout_secs",
                0,
                "must be at least 1 second",
            ));
        }
        if !(self.quotas.per_user_daily_usd.is_finite() && self.quotas.per_user_daily_usd >= 0.0) {
            return Err(ConfigError::invalid(
                "quotas.per_user_daily_usd",
                self.quotas.per_user_daily_usd,
                "must be 0 (no limit) or a positive number of dollars",
            ));
        }
        if self.defaults.max_turns == 0 {
            return Err(ConfigError::invalid(
                "defaults.max_turns",
                0,
                "must be at least 1",
            ));
        }
        if let Some(budget) = self.defaults.max_budget_usd
            && !(budget.is_finite() && budget > 0.0)
        {
            return Err(ConfigError::invalid(
                "defaults.max_budget_usd",
                budget,
                "must be a positive number of dollars",
            ));
        }
        if self
            .defaults
            .permission_mode
            .parse::<crate::tools::PermissionMode>()
            .is_err()
        {
            let names: Vec<&str> = crate::tools::PermissionMode::ALL
                .iter()
                .map(|m| m.as_str())
                .collect();
            return Err(ConfigError::invalid(
                "defaults.permission_mode",
                &self.defaults.permission_mode,
                format!("expected one of {}", names.join(", ")),
            ));
        }
        if let Some(key) = self
            .api
            .session_overrides
            .iter()
            .find(|k| !crate::options::OVERRIDE_KEYS.contains(&k.as_str()))
        {
            return Err(ConfigError::invalid(
                "api.session_overrides",
                key,
                format!(
                    "unknown key; expected any of {}",
                    crate::options::OVERRIDE_KEYS.join(", ")
                ),
            ));
        }
        if url::Url::parse(&self.anthropic.base_url).is_err() {
            return Err(ConfigError::invalid(
                "anthropic.base_url",
                &self.anthropic.base_url,
                "must be an absolute URL such as https://api.anthropic.com",
            ));
        }
        if self.anthropic.max_tokens == Some(0) {
            return Err(ConfigError::invalid(
                "anthropic.max_tokens",
                0,
                "must be at least 1 (or unset for the model's output limit)",
            ));
        }
        self.validate_context()
    }

    fn validate_context(&self) -> Result<(), ConfigError> {
        let context = &self.context;
        if !(context.auto_compact_at > 0.0 && context.auto_compact_at <= 1.0) {
            return Err(ConfigError::invalid(
                "context.auto_compact_at",
                context.auto_compact_at,
                "must be a fraction of the context window above 0 and at most 1",
            ));
        }
        if !(context.keep_recent >= 0.0 && context.keep_recent < context.auto_compact_at) {
            return Err(ConfigError::invalid(
                "context.keep_recent",
                context.keep_recent,
                "must be a fraction of the context window from 0 to below context.auto_compact_at",
            ));
        }
        if context.summary_max_tokens < 256 {
            return Err(ConfigError::invalid(
                "context.summary_max_tokens",
                context.summary_max_tokens,
                "must be at least 256",
            ));
        }
        for (prefix, limits) in &self.models {
            if limits.context_window < 1_024 || limits.max_output_tokens == 0 {
                return Err(ConfigError::invalid(
                    &format!("models.{prefix}"),
                    format!("{limits:?}"),
                    "context_window must be at least 1024 and max_output_tokens at least 1",
                ));
            }
        }
        if self.tools.max_result_tokens < 1_000 {
            return Err(ConfigError::invalid(
                "tools.max_result_tokens",
                self.tools.max_result_tokens,
                "must be at least 1000",
            ));
        }
        let budget = self.defaults.thinking_budget_tokens;
        if budget > 0 {
            let max_tokens = self.max_tokens_for(&self.defaults.model);
            if budget < 1_024 || budget >= max_tokens {
                return Err(ConfigError::invalid(
                    "defaults.thinking_budget_tokens",
                    budget,
                    format!(
                        "must be 0 (off) or from 1024 to below the model's max_tokens ({max_tokens})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `session.ttl` as a duration; `None` when sessions never expire.
    pub fn session_ttl(&self) -> Option<std::time::Duration> {
        u64::try_from(self.session.ttl)
            .ok()
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs)
    }

    /// The context window and output limit of a model: the longest
    /// configured prefix of its id, else [`FALLBACK_LIMITS`].
    pub fn limits_of(&self, model: &str) -> ModelLimits {
        self.models
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(FALLBACK_LIMITS, |(_, limits)| *limits)
    }

    /// `max_tokens` for a call to `model`: its output limit, capped by
    /// `anthropic.max_tokens`.
    pub fn max_tokens_for(&self, model: &str) -> u32 {
        let limit = self.limits_of(model).max_output_tokens;
        self.anthropic
            .max_tokens
            .map_or(limit, |cap| cap.min(limit))
    }

    /// The price of a model: the longest configured prefix of its id.
    pub fn price_of(&self, model: &str) -> Option<ModelPrice> {
        self.pricing
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, price)| *price)
    }
}

fn apply_env(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    var: &str,
    key: &str,
    kind: Kind,
    raw: String,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    let bad = |problem: &str| ConfigError::invalid(var, &raw, problem);
    let result = match kind {
        Kind::Text => builder.set_override(key, raw.clone()),
        Kind::Port => {
            let port: u16 = raw
                .trim()
                .parse()
                .map_err(|_| bad("expected a port number 0-65535"))?;
            builder.set_override(key, i64::from(port))
        }
        Kind::Int => {
            let n: i64 = raw
                .trim()
                .parse()
                .map_err(|_| bad("expected a whole number"))?;
            if n < 0 {
                return Err(bad("must not be negative"));
            }
            builder.set_override(key, n)
        }
        Kind::Float => {
            let x: f64 = raw
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad("expected a number of 0 or more"))?;
            builder.set_override(key, x)
        }
        Kind::List => {
            let items: Vec<String> = raw
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            builder.set_override(key, items)
        }
        Kind::Auth => {
            let mode: AuthMode = raw.parse().map_err(|e: String| bad(&e))?;
            builder.set_override(key, mode.as_str())
        }
        Kind::Bool => {
            let b = match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(bad("expected true or false")),
            };
            builder.set_override(key, b)
        }
        Kind::Storage => {
            let storage: StorageKind = raw.parse().map_err(|e: String| bad(&e))?;
            builder.set_override(key, storage.as_str())
        }
        Kind::Sandbox => {
            let mode: SandboxMode = raw.parse().map_err(|e: String| bad(&e))?;
            builder.set_override(key, mode.as_str())
        }
        Kind::Network => {
            raw.parse::<NetworkMode>().map_err(|e: String| bad(&e))?;
            builder.set_override(key, raw.trim().to_ascii_lowercase())
        }
        Kind::CommandUser => {
            raw.parse::<CommandUser>().map_err(|e: String| bad(&e))?;
            builder.set_override(key, raw.trim().to_ascii_lowercase())
        }
        Kind::AppendPrompt => {
            let preset = config::Map::from([
                ("preset".to_owned(), config::Value::from("claude_code")),
                ("append".to_owned(), config::Value::from(raw.clone())),
            ]);
            builder.set_override(key, preset)
        }
    };
    result.map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(yaml: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        if let Some(yaml) = yaml {
            std::fs::write(&path, yaml).unwrap();
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = yaml.map(|_| path.as_path());
        Settings::load_from(p, |k| env.get(k).cloned())
    }

    #[test]
    fn keys_auth_cors_and_quotas_come_from_the_environment() {
        let settings = load(None, &[]).unwrap();
        assert_eq!(settings.api.auth, None);
        assert!(settings.api.api_keys.is_empty());
        assert!(settings.api.cors_origins.is_empty(), "no CORS by default");
        let settings = load(
            None,
            &[
                ("CLAUDE_AGENT_API_KEYS", " k1-secret , ,k2-secret"),
                ("CLAUDE_AGENT_API_AUTH", "api_key"),
                (
                    "CLAUDE_AGENT_API_CORS_ORIGINS",
                    "http://a.example,http://b.example",
                ),
                ("CLAUDE_AGENT_QUOTAS_PER_USER_DAILY_TOKENS", "100000"),
                ("CLAUDE_AGENT_QUOTAS_PER_USER_DAILY_USD", "2.5"),
                ("CLAUDE_AGENT_QUOTAS_TURNS_PER_MINUTE", "10"),
            ],
        )
        .unwrap();
        let keys: Vec<&str> = settings
            .api
            .api_keys
            .iter()
            .filter_map(|k| k.expose())
            .collect();
        assert_eq!(keys, ["k1-secret", "k2-secret"]);
        assert!(!format!("{settings:?}").contains("k1-secret"));
        assert_eq!(settings.api.auth, Some(AuthMode::ApiKey));
        assert_eq!(
            settings.api.cors_origins,
            ["http://a.example", "http://b.example"]
        );
        assert_eq!(settings.quotas.per_user_daily_tokens, 100_000);
        assert_eq!(settings.quotas.per_user_daily_usd, 2.5);
        assert_eq!(settings.quotas.turns_per_minute, 10);
        let yaml =
            "api:\n  auth: none\n  api_keys: [from-file]\nquotas:\n  per_user_daily_usd: 1\n";
        let settings = load(Some(yaml), &[]).unwrap();
        assert_eq!(settings.api.auth, Some(AuthMode::None));
        assert_eq!(settings.api.api_keys[0].expose(), Some("from-file"));
        for (var, value) in [
            ("CLAUDE_AGENT_API_AUTH", "basic"),
            ("CLAUDE_AGENT_QUOTAS_PER_USER_DAILY_USD", "-1"),
            ("CLAUDE_AGENT_QUOTAS_TURNS_PER_MINUTE", "many"),
        ] {
            let err = load(None, &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn defaults_run_on_a_laptop() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.session.storage, StorageKind::Sqlite);
        assert_eq!(
            s.session.sqlite_path,
            PathBuf::from("./data/db/sessions.db")
        );
        assert_eq!(s.user.base_dir, PathBuf::from("./data/claude-users"));
        assert_eq!(s.api.port, 8000);
        assert_eq!(s.session.ttl, 3600);
    }

    #[test]
    fn environment_wins_over_file() {
        let yaml = "session:\n  storage: memory\n  ttl: 10\napi:\n  port: 9000\n";
        let s = load(
            Some(yaml),
            &[
                ("CLAUDE_AGENT_SESSION_STORAGE", "postgresql"),
                ("API_PORT", "8100"),
                ("CLAUDE_AGENT_SESSION_PG_HOST", "db.internal"),
            ],
        )
        .unwrap();
        assert_eq!(s.session.storage, StorageKind::Postgresql);
        assert_eq!(s.session.ttl, 10);
        assert_eq!(s.api.port, 8100);
        assert_eq!(s.session.pg_host, "db.internal");
    }

    #[test]
    fn claude_agent_api_port_beats_api_port() {
        let s = load(
            None,
            &[("API_PORT", "8100"), ("CLAUDE_AGENT_API_PORT", "8200")],
        )
        .unwrap();
        assert_eq!(s.api.port, 8200);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let err = load(None, &[("CLAUDE_AGENT_SESSION_STORAGE", "mongo")]).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("CLAUDE_AGENT_SESSION_STORAGE") && line.contains("mongo"),
            "{line}"
        );

        let err = load(None, &[("API_PORT", "abc")]).unwrap_err().to_string();
        assert!(err.contains("API_PORT") && err.contains("abc"), "{err}");

        let err = load(None, &[("CLAUDE_AGENT_SESSION_TTL", "-5")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CLAUDE_AGENT_SESSION_TTL") && err.contains("-5"),
            "{err}"
        );

        assert_eq!(
            load(None, &[]).unwrap().defaults.permission_timeout_secs,
            300
        );
        let s = load(
            None,
            &[("CLAUDE_AGENT_DEFAULTS_PERMISSION_TIMEOUT_SECS", "7")],
        )
        .unwrap();
        assert_eq!(s.defaults.permission_timeout_secs, 7);
        let err = load(Some("defaults:\n  permission_timeout_secs: 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("defaults.permission_timeout_secs"), "{err}");

        let err = load(Some("session:\n  ttl: -1\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("session.ttl") && err.contains("-1"), "{err}");

        let err = load(Some("session:\n  storage: mongo\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mongo"), "{err}");
    }

    #[test]
    fn password_never_in_debug() {
        let s = load(
            None,
            &[
                ("CLAUDE_AGENT_SESSION_PG_PASSWORD", "hunter2"),
                ("ANTHROPIC_API_KEY", "sk-ant-xyz"),
            ],
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("sk-ant-xyz"),
            "{shown}"
        );
        assert_eq!(s.session.pg_password.expose(), Some("hunter2"));
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err =
            Settings::load_from(Some(Path::new("/nonexistent/c.yaml")), |_| None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.yaml"));
    }

    #[test]
    fn event_retention_and_callbacks_come_from_the_environment() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.session.event_retention.turns, 20);
        assert_eq!(s.session.event_retention.max_age_secs, 604_800);
        assert!(!s.api.allow_callbacks);
        let s = load(
            None,
            &[
                ("CLAUDE_AGENT_SESSION_EVENT_RETENTION_TURNS", "3"),
                ("CLAUDE_AGENT_SESSION_EVENT_RETENTION_MAX_AGE_SECS", "0"),
                ("CLAUDE_AGENT_API_ALLOW_CALLBACKS", "true"),
                ("CLAUDE_AGENT_API_CALLBACK_SECRET", "s3cret"),
            ],
        )
        .unwrap();
        assert_eq!(s.session.event_retention.turns, 3);
        assert_eq!(s.session.event_retention.max_age_secs, 0);
        assert!(s.api.allow_callbacks);
        assert_eq!(s.api.callback_secret.expose(), Some("s3cret"));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "the secret stays hidden"
        );

        let err = load(None, &[("CLAUDE_AGENT_API_ALLOW_CALLBACKS", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.callback_secret"), "{err}");
        let err = load(None, &[("CLAUDE_AGENT_SESSION_EVENT_RETENTION_TURNS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("session.event_retention.turns"), "{err}");
    }

    #[test]
    fn map_keys_keep_their_case() {
        let s = load(
            Some("mcp_servers:\n  GitHub:\n    command: gh\n    env:\n      GH_TOKEN: x\n"),
            &[],
        )
        .unwrap();
        let shown = format!("{:?}", s.mcp_servers);
        assert!(
            shown.contains("GitHub") && shown.contains("GH_TOKEN"),
            "{shown}"
        );
        assert!(!shown.contains(": x"), "env values stay hidden: {shown}");
    }

    #[test]
    fn project_mcp_servers_are_denied_unless_allowed() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.mcp.project_servers, ProjectServers::Deny);
        let s = load(Some("mcp:\n  project_servers: allow\n"), &[]).unwrap();
        assert_eq!(s.mcp.project_servers, ProjectServers::Allow);
        assert!(load(Some("mcp:\n  project_servers: maybe\n"), &[]).is_err());
    }

    #[test]
    fn command_user_and_its_ids_are_read_and_checked() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.tools.command_user, CommandUser::Auto);
        assert_eq!(s.tools.command_uids, CommandUids::default());
        let yaml = "tools:\n  command_user: service\n  command_uids:\n    first: 200000\n    count: 5000\n";
        let s = load(Some(yaml), &[]).unwrap();
        assert_eq!(s.tools.command_user, CommandUser::Service);
        assert_eq!(
            s.tools.command_uids,
            CommandUids {
                first: 200_000,
                count: 5_000
            }
        );
        let s = load(
            Some(yaml),
            &[("CLAUDE_AGENT_TOOLS_COMMAND_USER", "Per_User")],
        )
        .unwrap();
        assert_eq!(s.tools.command_user, CommandUser::PerUser);
        let err = load(None, &[("CLAUDE_AGENT_TOOLS_COMMAND_USER", "root")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("per_user"), "{err}");
        for bad in ["first: 0", "count: 0", "first: 4294967000\n    count: 1000"] {
            let yaml = format!("tools:\n  command_uids:\n    {bad}\n");
            let err = load(Some(&yaml), &[]).unwrap_err().to_string();
            assert!(err.contains("tools.command_uids"), "{bad}: {err}");
        }
    }

    #[test]
    fn sandbox_defaults_to_auto_and_env_wins() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.tools.sandbox, SandboxMode::Auto);
        assert_eq!(s.tools.sandbox_exe, None);

        let yaml = "tools:\n  sandbox: on\n  sandbox_exe: /opt/cah/claude-agent-http\n";
        let s = load(Some(yaml), &[]).unwrap();
        assert_eq!(s.tools.sandbox, SandboxMode::On);
        assert_eq!(
            s.tools.sandbox_exe,
            Some(PathBuf::from("/opt/cah/claude-agent-http"))
        );
        let s = load(Some("tools:\n  sandbox: off\n"), &[]).unwrap();
        assert_eq!(s.tools.sandbox, SandboxMode::Off);

        let s = load(Some(yaml), &[("CLAUDE_AGENT_TOOLS_SANDBOX", "OFF")]).unwrap();
        assert_eq!(s.tools.sandbox, SandboxMode::Off);

        let err = load(None, &[("CLAUDE_AGENT_TOOLS_SANDBOX", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CLAUDE_AGENT_TOOLS_SANDBOX") && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn shutdown_grace_fits_in_dockers_stop_timeout_and_env_sets_it() {
        let s = load(None, &[]).unwrap();
        assert!(
            s.api.shutdown_grace_secs < 10,
            "{}",
            s.api.shutdown_grace_secs
        );
        let s = load(
            Some("api:\n  shutdown_grace_secs: 20\n"),
            &[("CLAUDE_AGENT_API_SHUTDOWN_GRACE_SECS", "2")],
        )
        .unwrap();
        assert_eq!(s.api.shutdown_grace_secs, 2);
    }

    #[test]
    fn connection_limits_have_defaults_env_and_refuse_zero_timeouts() {
        let s = load(None, &[]).unwrap();
        assert_eq!(
            (
                s.api.header_timeout_secs,
                s.api.body_timeout_secs,
                s.api.idle_timeout_secs,
                s.api.max_connections
            ),
            (10, 60, 60, 0)
        );
        let s = load(
            None,
            &[
                ("CLAUDE_AGENT_API_HEADER_TIMEOUT_SECS", "3"),
                ("CLAUDE_AGENT_API_BODY_TIMEOUT_SECS", "4"),
                ("CLAUDE_AGENT_API_IDLE_TIMEOUT_SECS", "5"),
                ("CLAUDE_AGENT_API_MAX_CONNECTIONS", "6"),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                s.api.header_timeout_secs,
                s.api.body_timeout_secs,
                s.api.idle_timeout_secs,
                s.api.max_connections
            ),
            (3, 4, 5, 6)
        );
        let err = load(Some("api:\n  idle_timeout_secs: 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.idle_timeout_secs"), "{err}");
    }

    #[test]
    fn session_overrides_default_to_the_safe_keys_and_unknown_keys_are_refused() {
        let s = load(None, &[]).unwrap();
        assert!(s.api.session_overrides.contains(&"model".to_owned()));
        assert!(
            !s.api
                .session_overrides
                .contains(&"system_prompt".to_owned())
        );
        let s = load(
            None,
            &[(
                "CLAUDE_AGENT_API_SESSION_OVERRIDES",
                "model, system_prompt,,max_turns",
            )],
        )
        .unwrap();
        assert_eq!(
            s.api.session_overrides,
            ["model", "system_prompt", "max_turns"]
        );
        let s = load(Some("api:\n  session_overrides: []\n"), &[]).unwrap();
        assert!(s.api.session_overrides.is_empty());
        let err = load(Some("api:\n  session_overrides: [model, cwd]\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("api.session_overrides") && err.contains("cwd"),
            "{err}"
        );
    }

    #[test]
    fn upload_and_attachment_limits_have_defaults_env_and_refuse_zero() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.api.max_upload_bytes, 25 * 1024 * 1024);
        assert_eq!(s.api.max_attachments, 20);
        assert_eq!(s.api.max_image_bytes, 3_932_160);
        let s = load(
            None,
            &[
                ("CLAUDE_AGENT_API_MAX_UPLOAD_BYTES", "2048"),
                ("CLAUDE_AGENT_API_MAX_ATTACHMENTS", "3"),
                ("CLAUDE_AGENT_API_MAX_IMAGE_BYTES", "4096"),
                ("CLAUDE_AGENT_API_MAX_DOCUMENT_BYTES", "8192"),
                ("CLAUDE_AGENT_API_MAX_ATTACHMENTS_BYTES", "9000"),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                s.api.max_upload_bytes,
                s.api.max_attachments,
                s.api.max_image_bytes,
                s.api.max_document_bytes,
                s.api.max_attachments_bytes
            ),
            (2048, 3, 4096, 8192, 9000)
        );
        // The chat body holds the attachments as base64 beside the JSON.
        assert_eq!(s.api.max_chat_body_bytes(), s.api.max_body_bytes + 12_000);
        let err = load(Some("api:\n  max_upload_bytes: 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.max_upload_bytes"), "{err}");
    }

    #[test]
    fn system_prompt_is_a_string_or_the_preset_with_appended_text() {
        assert_eq!(load(None, &[]).unwrap().defaults.system_prompt, None);
        assert_eq!(
            load(Some("defaults:\n  system_prompt: null\n"), &[])
                .unwrap()
                .defaults
                .system_prompt,
            None
        );
        let s = load(Some("defaults:\n  system_prompt: Be terse.\n"), &[]).unwrap();
        assert_eq!(
            s.defaults.system_prompt,
            Some(SystemPromptConfig::Replace("Be terse.".into()))
        );
        for yaml in [
            "defaults:\n  system_prompt: {preset: claude_code, append: Answer in French.}\n",
            "defaults:\n  system_prompt:\n    type: preset\n    preset: claude_code\n    append: Answer in French.\n",
        ] {
            let s = load(Some(yaml), &[]).unwrap();
            assert_eq!(
                s.defaults.system_prompt,
                Some(SystemPromptConfig::Preset {
                    append: Some("Answer in French.".into())
                }),
                "{yaml}"
            );
        }
        let s = load(
            Some("defaults:\n  system_prompt: {preset: claude_code}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.defaults.system_prompt,
            Some(SystemPromptConfig::Preset { append: None })
        );
        for bad in [
            "defaults:\n  system_prompt: {preset: other}\n",
            "defaults:\n  system_prompt: {preset: claude_code, appendix: x}\n",
            "defaults:\n  system_prompt: [a, b]\n",
        ] {
            let err = load(Some(bad), &[]).unwrap_err().to_string();
            assert!(
                err.contains("system_prompt") || err.contains("preset"),
                "{bad}: {err}"
            );
        }

        // The environment wins over the file, in either form.
        let file = Some("defaults:\n  system_prompt: {preset: claude_code, append: from file}\n");
        let s = load(file, &[("CLAUDE_AGENT_SYSTEM_PROMPT", "From env.")]).unwrap();
        assert_eq!(
            s.defaults.system_prompt,
            Some(SystemPromptConfig::Replace("From env.".into()))
        );
        let s = load(
            Some("defaults:\n  system_prompt: Replaced.\n"),
            &[("CLAUDE_AGENT_APPEND_SYSTEM_PROMPT", "Also this.")],
        )
        .unwrap();
        assert_eq!(
            s.defaults.system_prompt,
            Some(SystemPromptConfig::Preset {
                append: Some("Also this.".into())
            })
        );
    }

    #[test]
    fn agents_are_read_from_the_file_and_checked() {
        let s = load(
            Some("agents:\n  Code-Planner:\n    description: Plans\n    prompt: You plan.\n    tools: [Read, Grep]\n    model: haiku\n"),
            &[],
        )
        .unwrap();
        let planner = &s.agents["Code-Planner"];
        assert_eq!(
            planner.tools.as_deref(),
            Some(&["Read".to_owned(), "Grep".to_owned()][..])
        );
        assert_eq!(planner.model.as_deref(), Some("haiku"));
        let colon = load(
            Some("agents:\n  \"plug:in\":\n    description: d\n    prompt: p\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(colon.contains("agents.plug:in"), "{colon}");
        let empty = load(
            Some("agents:\n  x:\n    description: d\n    prompt: ''\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(empty.contains("prompt"), "{empty}");
    }

    #[test]
    fn claude_home_defaults_to_home_dot_claude_and_env_sets_it() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.user.claude_home, None);
        if let Some(home) = crate::skills::home_dir() {
            assert_eq!(s.user.claude_home(), Some(home.join(".claude")));
        }
        let s = load(
            Some("user:\n  claude_home: /srv/claude\n"),
            &[("CLAUDE_AGENT_USER_CLAUDE_HOME", "/etc/claude-agent")],
        )
        .unwrap();
        assert_eq!(
            s.user.claude_home(),
            Some(PathBuf::from("/etc/claude-agent"))
        );
    }

    #[test]
    fn rule_lists_and_the_claude_home_load_from_the_file() {
        let yaml = "user:\n  claude_home: /srv/claude\ndefaults:\n  ask_tools: [\"Bash(git push:*)\"]\n  disallowed_tools: [\"Bash(rm:*)\"]\n  setting_sources: [project, local]\n";
        let s = load(Some(yaml), &[]).unwrap();
        assert_eq!(s.defaults.ask_tools, ["Bash(git push:*)"]);
        assert_eq!(s.defaults.disallowed_tools, ["Bash(rm:*)"]);
        assert_eq!(
            s.defaults.setting_sources,
            [SettingSource::Project, SettingSource::Local]
        );
        assert_eq!(s.user.claude_home(), Some(PathBuf::from("/srv/claude")));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let s = Settings::load_from(Some(&shipped), |_| None).unwrap();
        assert!(s.defaults.ask_tools.is_empty() && s.user.claude_home.is_none());
        let err = load(Some("defaults:\n  permission_mode: auto\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dontAsk"), "{err}");
    }

    #[test]
    fn price_uses_longest_prefix() {
        let s = Settings::default();
        assert_eq!(s.price_of("claude-opus-4-5-20251101").unwrap().input, 5.0);
        assert_eq!(s.price_of("claude-opus-4-1").unwrap().input, 15.0);
        assert!(s.price_of("gpt-4").is_none());
    }
}
