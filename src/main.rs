//! Entry point: parse arguments, load settings, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use claude_agent_http::config::Settings;
use claude_agent_http::startup::Application;
use claude_agent_http::{healthcheck, sandbox, telemetry};

const USAGE: &str = "usage: claude-agent-http [--config PATH] [healthcheck]

  (no command)   serve the HTTP API
  healthcheck    exit 0 when the running service's /health is healthy

The config file defaults to $CLAUDE_AGENT_CONFIG, then ./config.yaml;
environment variables override it (see README.md).";

/// How long blocking work left at exit may hold the process.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // Internal: how the Bash tool confines a command. Handled before anything
    // else (no settings, no runtime) and left out of the usage on purpose.
    let mut raw = std::env::args_os().skip(1).peekable();
    if raw.peek().is_some_and(|arg| arg == sandbox::SUBCOMMAND) {
        return sandbox::run_subcommand(raw.skip(1));
    }

    // Other processes of the service's user, the commands it runs among
    // them, may not read its memory or /proc files (environ holds the API
    // key and the database password). Commands re-executed from it start
    // dumpable again, as exec resets the flag.
    if let Err(err) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("claude-agent-http: warning: cannot make the process non-dumpable: {err}");
    }

    let mut config: Option<PathBuf> = None;
    let mut command: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a path"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("claude-agent-http {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "healthcheck" | "serve" if command.is_none() => command = Some(arg),
            other => return usage_error(&format!("unexpected argument '{other}'")),
        }
    }

    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("claude-agent-http: configuration error: {err}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("claude-agent-http: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    if command.as_deref() == Some("healthcheck") {
        return runtime.block_on(healthcheck::run(&settings));
    }

    telemetry::init(settings.log.format);
    let code = runtime.block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(error = %err, "start-up failed");
                eprintln!("claude-agent-http: start-up failed: {err}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "server failed");
                ExitCode::FAILURE
            }
        }
    });
    // Dropping the runtime would wait for blocking work still running (a
    // tool's file walk), past the shutdown grace.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("claude-agent-http: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}
