//! What child processes (Bash commands, stdio MCP servers) may inherit from
//! the service's environment: never its credentials or its own settings.

/// Whether an environment variable looks like a secret or belongs to the
/// service: `ANTHROPIC_*`, `CLAUDE_AGENT_*`, `DATABASE_URL` (connection strings
/// embed passwords), any name containing PASSWORD, SECRET or TOKEN, and any
/// name with a `KEY` word (`API_KEY`, `SSH_KEY`, but not `KEYBOARD`).
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("ANTHROPIC_")
        || upper.starts_with("CLAUDE_AGENT_")
        || upper == "DATABASE_URL"
        || ["PASSWORD", "SECRET", "TOKEN"]
            .iter()
            .any(|word| upper.contains(word))
        || upper
            .split(['_', '-'])
            .any(|word| matches!(word, "KEY" | "KEYS" | "APIKEY"))
}

/// The basics a program needs to run and to format text for people: where
/// to find commands, whose home, which locale, terminal, time zone and temp
/// dir, and the system's CA certificates. Nothing here can hold a credential,
/// so an allow-list of these is safe whatever else the service's environment
/// holds (`DB_PASS`, `SENTRY_DSN`, proxies with passwords...).
pub fn is_basic_name(name: &str) -> bool {
    const BASIC: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    BASIC.contains(&name) || name.starts_with("LC_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_basics_are_basic() {
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "LC_TIME", "TZ", "TMPDIR"] {
            assert!(is_basic_name(name), "{name}");
        }
        for name in [
            "DB_PASS",
            "SENTRY_DSN",
            "BASIC_AUTH_CREDS",
            "HTTPS_PROXY",
            "NODE_OPTIONS",
            "path",
        ] {
            assert!(!is_basic_name(name), "{name}");
        }
    }

    #[test]
    fn service_settings_and_credentials_are_secret() {
        for name in [
            "ANTHROPIC_API_KEY",
            "anthropic_auth_token",
            "CLAUDE_AGENT_SESSION_PG_PASSWORD",
            "DATABASE_URL",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "SSH_KEY",
            "OPENAI_APIKEY",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "TERM",
            "NODE_ENV",
            "KEYBOARD",
            "MONKEY_BUSINESS",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
