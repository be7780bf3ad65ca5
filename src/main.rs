//! Entry point: parse arguments, load settings, start logging, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use claude_agent_http::cli::{Cli, Command, run_keys};
use claude_agent_http::config::Settings;
use claude_agent_http::startup::Application;
use claude_agent_http::{healthcheck, sandbox, telemetry};

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

    // Parsed after the sandbox check: clap exits 2 on a usage error, 0 for --help.
    let cli = Cli::parse();

    let settings = match Settings::load(cli.config.as_deref()) {
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

    match cli.command {
        Some(Command::Healthcheck) => return runtime.block_on(healthcheck::run(&settings)),
        Some(Command::Keys { action }) => return runtime.block_on(run_keys(&settings, action)),
        Some(Command::Serve) | None => {}
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
