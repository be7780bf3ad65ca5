//! How MCP servers are configured: the `mcp_servers` entries of the service
//! config and the `.mcp.json` files plugins ship, in the shapes users already write.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;

use serde::Deserialize;

use crate::plugins::PluginConfig;

/// One MCP server. Header and env values often carry API tokens, so `Debug`
/// shows their names only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawServer")]
pub enum McpServerConfig {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        /// `scope: session`: one process per session, started in the
        /// session's directory and confined like its Bash commands, instead
        /// of one process every session shares.
        per_session: bool,
    },
    /// The streamable HTTP transport (one endpoint, POST + optional SSE).
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
    /// The older HTTP+SSE transport (GET an event stream, POST to the
    /// endpoint it announces).
    Sse {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

impl McpServerConfig {
    /// The transport's name as written in config, for logs and `/health`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdio { .. } => "stdio",
            Self::Http { .. } => "http",
            Self::Sse { .. } => "sse",
        }
    }
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        match self {
            Self::Stdio {
                command,
                args,
                env,
                per_session,
            } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &keys(env))
                .field("per_session", per_session)
                .finish(),
            Self::Http { url, headers } => f
                .debug_struct("Http")
                .field("url", url)
                .field("headers", &keys(headers))
                .finish(),
            Self::Sse { url, headers } => f
                .debug_struct("Sse")
                .field("url", url)
                .field("headers", &keys(headers))
                .finish(),
        }
    }
}

/// Every field any transport uses, so a missing `type` can be told apart
/// from a wrong one with a clear message (an untagged enum would only say
/// "did not match any variant"). Unknown fields are ignored: `.mcp.json`
/// files written for other clients carry extras such as `timeout`.
#[derive(Deserialize)]
struct RawServer {
    #[serde(rename = "type")]
    kind: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// `shared` (default) or `session`, for stdio servers.
    scope: Option<String>,
}

impl TryFrom<RawServer> for McpServerConfig {
    type Error = String;

    fn try_from(raw: RawServer) -> Result<Self, Self::Error> {
        let kind = match (raw.kind.as_deref(), &raw.command) {
            (Some(kind), _) => kind,
            // `.mcp.json` files commonly leave out the type of stdio servers.
            (None, Some(_)) => "stdio",
            (None, None) => {
                return Err("an MCP server needs a `type` (stdio, http or sse)".into());
            }
        };
        let need_url = |url: Option<String>| {
            url.filter(|u| !u.trim().is_empty())
                .ok_or_else(|| format!("an MCP server of type `{kind}` needs a `url`"))
        };
        let per_session = match (raw.scope.as_deref(), kind) {
            (None | Some("shared"), _) => false,
            (Some("session"), "stdio") => true,
            (Some("session"), _) => {
                return Err(format!(
                    "`scope: session` is for stdio servers, not `{kind}` ones"
                ));
            }
            (Some(other), _) => {
                return Err(format!(
                    "unknown MCP server scope `{other}` (expected shared or session)"
                ));
            }
        };
        match kind {
            "stdio" => Ok(Self::Stdio {
                command: raw
                    .command
                    .filter(|c| !c.trim().is_empty())
                    .ok_or("an MCP server of type `stdio` needs a `command`")?,
                args: raw.args,
                env: raw.env,
                per_session,
            }),
            "http" => Ok(Self::Http {
                url: need_url(raw.url)?,
                headers: raw.headers,
            }),
            "sse" => Ok(Self::Sse {
                url: need_url(raw.url)?,
                headers: raw.headers,
            }),
            other => Err(format!(
                "unknown MCP server type `{other}` (expected stdio, http or sse)"
            )),
        }
    }
}

/// The file a plugin or a project declares its servers in.
#[derive(Deserialize)]
pub(super) struct McpJson {
    #[serde(rename = "mcpServers", default)]
    pub(super) mcp_servers: BTreeMap<String, serde_json::Value>,
}

/// Servers from config plus those in each plugin's `.mcp.json`. Config wins
/// a name collision: it is what the operator wrote for this service. A bad
/// file or entry is skipped with a warning rather than stopping start-up,
/// since a plugin is third-party content.
pub fn collect_servers(
    configured: &BTreeMap<String, McpServerConfig>,
    plugins: &[PluginConfig],
) -> BTreeMap<String, McpServerConfig> {
    let mut servers = configured.clone();
    for plugin in plugins.iter().map(PluginConfig::resolve) {
        let path = plugin.dir.join(".mcp.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read plugin .mcp.json");
                continue;
            }
        };
        let file: McpJson = match serde_json::from_str(&text) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "invalid plugin .mcp.json");
                continue;
            }
        };
        let root = plugin.dir.to_string_lossy().into_owned();
        for (name, value) in file.mcp_servers {
            let config = match serde_json::from_value::<McpServerConfig>(value) {
                Ok(config) => config,
                Err(e) => {
                    tracing::warn!(file = %path.display(), server = %name, error = %e, "skipping MCP server");
                    continue;
                }
            };
            if servers.contains_key(&name) {
                tracing::warn!(server = %name, plugin = %plugin.name, "MCP server name already configured; keeping the configured one");
                continue;
            }
            servers.insert(name, expand_plugin_root(config, &root));
        }
    }
    servers
}

/// Plugins refer to their own files as `${CLAUDE_PLUGIN_ROOT}/...`, since
/// they cannot know where they will be installed.
fn expand_plugin_root(config: McpServerConfig, root: &str) -> McpServerConfig {
    let expand = |s: String| s.replace("${CLAUDE_PLUGIN_ROOT}", root);
    match config {
        McpServerConfig::Stdio {
            command,
            args,
            env,
            per_session,
        } => McpServerConfig::Stdio {
            command: expand(command),
            args: args.into_iter().map(expand).collect(),
            env: env.into_iter().map(|(k, v)| (k, expand(v))).collect(),
            per_session,
        },
        other => other,
    }
}

/// Whether a variable of the service's environment may reach an MCP server
/// child. Servers are third-party programs, and a deny-list of secret-looking
/// names cannot know every secret (`DB_PASS`, `SENTRY_DSN`): only the basics
/// pass, and a server that needs more, a secret included, gets it through its
/// `env` in config.
pub fn inherits_env(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    crate::child_env::is_basic_name(&name) && !crate::child_env::is_secret_name(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<McpServerConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_stdio_server_may_run_per_session_and_nothing_else_may() {
        let parsed = parse(r#"{"command": "node", "scope": "session"}"#).unwrap();
        assert!(matches!(
            parsed,
            McpServerConfig::Stdio {
                per_session: true,
                ..
            }
        ));
        let shared = parse(r#"{"command": "node", "scope": "shared"}"#).unwrap();
        assert!(matches!(
            shared,
            McpServerConfig::Stdio {
                per_session: false,
                ..
            }
        ));
        let err = parse(r#"{"type": "http", "url": "http://h", "scope": "session"}"#).unwrap_err();
        assert!(err.contains("stdio"), "{err}");
        let err = parse(r#"{"command": "node", "scope": "user"}"#).unwrap_err();
        assert!(err.contains("shared or session"), "{err}");
    }

    #[test]
    fn accepts_the_three_shapes_and_untyped_stdio() {
        assert_eq!(
            parse(r#"{"type": "stdio", "command": "node", "args": ["x.js"], "env": {"A": "1"}}"#)
                .unwrap(),
            McpServerConfig::Stdio {
                command: "node".into(),
                args: vec!["x.js".into()],
                env: BTreeMap::from([("A".into(), "1".into())]),
                per_session: false,
            }
        );
        assert_eq!(
            parse(r#"{"command": "npx"}"#).unwrap(),
            McpServerConfig::Stdio {
                command: "npx".into(),
                args: vec![],
                env: BTreeMap::new(),
                per_session: false,
            }
        );
        assert_eq!(
            parse(r#"{"type": "http", "url": "http://h/mcp", "headers": {"Authorization": "Bearer t"}}"#)
                .unwrap(),
            McpServerConfig::Http {
                url: "http://h/mcp".into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer t".into())]),
            }
        );
        assert_eq!(
            parse(r#"{"type": "sse", "url": "http://h/sse"}"#).unwrap(),
            McpServerConfig::Sse {
                url: "http://h/sse".into(),
                headers: BTreeMap::new(),
            }
        );
        // The YAML config file gives the same shapes.
        let yaml: BTreeMap<String, McpServerConfig> =
            serde_yaml::from_str("fs: {type: stdio, command: npx, args: [-y, pkg]}\n").unwrap();
        assert_eq!(yaml["fs"].kind(), "stdio");
    }

    #[test]
    fn rejects_incomplete_or_unknown_shapes_with_a_reason() {
        assert!(
            parse(r#"{"url": "http://h"}"#)
                .unwrap_err()
                .contains("needs a `type`")
        );
        assert!(
            parse(r#"{"type": "http"}"#)
                .unwrap_err()
                .contains("needs a `url`")
        );
        assert!(
            parse(r#"{"type": "stdio"}"#)
                .unwrap_err()
                .contains("needs a `command`")
        );
        assert!(
            parse(r#"{"type": "ws", "url": "x"}"#)
                .unwrap_err()
                .contains("unknown MCP server type `ws`")
        );
    }

    #[test]
    fn debug_hides_header_and_env_values() {
        let c = parse(
            r#"{"type": "http", "url": "http://h", "headers": {"Authorization": "Bearer s3cr3t"}}"#,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("Authorization"));
        assert!(!shown.contains("s3cr3t"));
        let c = parse(r#"{"command": "x", "env": {"API_KEY": "s3cr3t"}}"#).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn plugin_servers_join_config_which_wins_collisions() {
        let tmp = tempfile::tempdir().unwrap();
        let plugin = tmp.path().join("plug");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::write(
            plugin.join(".mcp.json"),
            r#"{"mcpServers": {
                "helper": {"command": "${CLAUDE_PLUGIN_ROOT}/bin/helper", "args": ["--root", "${CLAUDE_PLUGIN_ROOT}"]},
                "shared": {"type": "http", "url": "http://plugin"},
                "broken": {"type": "carrier-pigeon"}
            }}"#,
        )
        .unwrap();
        let configured = BTreeMap::from([(
            "shared".to_owned(),
            McpServerConfig::Http {
                url: "http://configured".into(),
                headers: BTreeMap::new(),
            },
        )]);
        let plugins = [PluginConfig::Local {
            path: plugin.clone(),
        }];
        let servers = collect_servers(&configured, &plugins);
        assert_eq!(servers.keys().collect::<Vec<_>>(), ["helper", "shared"]);
        let root = plugin.display().to_string();
        assert_eq!(
            servers["helper"],
            McpServerConfig::Stdio {
                command: format!("{root}/bin/helper"),
                args: vec!["--root".into(), root.clone()],
                env: BTreeMap::new(),
                per_session: false,
            }
        );
        assert_eq!(
            servers["shared"],
            McpServerConfig::Http {
                url: "http://configured".into(),
                headers: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn secrets_do_not_reach_server_children() {
        for blocked in [
            "ANTHROPIC_API_KEY",
            "CLAUDE_AGENT_DATABASE__PASSWORD",
            "PGPASSWORD",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "OPENAI_API_KEY",
            "DATABASE_URL",
            "github_token",
            // Secrets no name filter recognises.
            "DB_PASS",
            "SENTRY_DSN",
            "BASIC_AUTH_CREDS",
            "HTTPS_PROXY",
        ] {
            assert!(!inherits_env(OsStr::new(blocked)), "{blocked} leaked");
        }
        for kept in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
            assert!(inherits_env(OsStr::new(kept)), "{kept} dropped");
        }
    }
}
