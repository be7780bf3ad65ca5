//! `fake-anthropic`: serve the fake Messages API on a port, for trying the
//! service without an API key and for tests that are not written in Rust.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use fake_anthropic::{Config, FakeAnthropic};

const USAGE: &str = "usage: fake-anthropic [--host 127.0.0.1] [--port 8001] [--api-key KEY]

Serves a fake Anthropic Messages API at http://HOST:PORT/v1/messages.
Without --api-key (or FAKE_ANTHROPIC_API_KEY), any non-empty key is accepted.
Script replies with POST /_fake/replies, read requests with GET /_fake/requests,
clear both with POST /_fake/reset. With nothing scripted it echoes the last
user message.";

struct Args {
    host: IpAddr,
    port: u16,
    api_key: Option<String>,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut host = IpAddr::from([127, 0, 0, 1]);
    let mut port = 8001u16;
    let mut api_key = std::env::var("FAKE_ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--host" => {
                let v = value()?;
                host = v
                    .parse()
                    .map_err(|_| format!("--host: not an IP address: {v}"))?;
            }
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("--port: not a port: {v}"))?;
            }
            "--api-key" => api_key = Some(value()?),
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    Ok(Parsed::Run(Args {
        host,
        port,
        api_key,
    }))
}

/// Installs the signal handlers and returns a future that resolves on the
/// first SIGINT or SIGTERM. Installing happens here, not on first poll, so a
/// signal sent right after the banner is never missed (the default action
/// would kill the process with a non-zero status).
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fake-anthropic: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        api_key: args.api_key,
        addr: SocketAddr::new(args.host, args.port),
    };
    let fake = match FakeAnthropic::try_start_with(config).await {
        Ok(fake) => fake,
        Err(error) => {
            eprintln!(
                "fake-anthropic: cannot listen on {}:{}: {error}",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("fake-anthropic: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts wait for this exact line to learn the port (with --port 0).
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "fake-anthropic listening on {}", fake.url());
    let _ = stdout.flush();
    drop(stdout);

    shutdown.await;
    drop(fake);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(args) => Ok(args),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn parses_flags_in_both_forms() {
        let args = run(&["--host", "0.0.0.0", "--port=9000", "--api-key", "k"]).expect("valid");
        assert_eq!(args.host.to_string(), "0.0.0.0");
        assert_eq!(args.port, 9000);
        assert_eq!(args.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--port"]).is_err());
        assert!(run(&["--port", "x"]).is_err());
        assert!(run(&["--nope"]).is_err());
        assert_eq!(run(&["-h"]).err().as_deref(), Some("help"));
    }
}
