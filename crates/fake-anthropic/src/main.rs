//! `fake-anthropic`: serve the fake Messages API on a port, for trying the
//! service without an API key and for tests that are not written in Rust.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use fake_anthropic::{Config, DEFAULT_CONTEXT_WINDOW, FakeAnthropic};

const USAGE: &str = "usage: fake-anthropic [--host 127.0.0.1] [--port 8001] [--api-key KEY]
                      [--context-window N|none] [--min-cacheable-tokens N]
                      [--overloaded-model MODEL]...

Serves a fake Anthropic Messages API at http://HOST:PORT/v1/messages.
Without --api-key (or FAKE_ANTHROPIC_API_KEY), any non-empty key is accepted.
Script replies with POST /_fake/replies, read requests (with the usage each
answer reported) with GET /_fake/requests, clear both and the prompt cache with
POST /_fake/reset. With nothing scripted it echoes the last user message.

Prompt caching is simulated: cache_control breakpoints write prefixes that later
requests read, and usage reports cache reads and writes. --min-cacheable-tokens
sets the shortest prefix cached for every model (default: each model's own
minimum, 1024 to 4096). POST /_fake/clock {\"advance_ms\": N} moves the clock the
cache expires by.

--context-window (default 200000; none for no limit) rejects longer prompts
with the real 400. --overloaded-model makes a model answer 529 to every request.
Both, and the cache minimum, can be changed while running with POST /_fake/config
{\"context_window\": N|null, \"min_cacheable_tokens\": N|null,
\"overloaded_models\": [...]}; GET /_fake/config shows them.";

struct Args {
    host: IpAddr,
    port: u16,
    api_key: Option<String>,
    context_window: Option<u64>,
    min_cacheable_tokens: Option<u64>,
    overloaded_models: Vec<String>,
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
    let mut context_window = Some(DEFAULT_CONTEXT_WINDOW);
    let mut min_cacheable_tokens = None;
    let mut overloaded_models = Vec::new();
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
            "--context-window" => {
                let v = value()?;
                context_window = match v.as_str() {
                    "none" => None,
                    n => Some(n.parse().map_err(|_| {
                        format!("--context-window: not a token count or none: {v}")
                    })?),
                };
            }
            "--min-cacheable-tokens" => {
                let v = value()?;
                min_cacheable_tokens = Some(
                    v.parse()
                        .map_err(|_| format!("--min-cacheable-tokens: not a token count: {v}"))?,
                );
            }
            "--overloaded-model" => overloaded_models.push(value()?),
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    Ok(Parsed::Run(Args {
        host,
        port,
        api_key,
        context_window,
        min_cacheable_tokens,
        overloaded_models,
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
        context_window: args.context_window,
        min_cacheable_tokens: args.min_cacheable_tokens,
        overloaded_models: args.overloaded_models,
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
        assert_eq!(args.context_window, Some(DEFAULT_CONTEXT_WINDOW));
        assert_eq!(args.min_cacheable_tokens, None);
        assert!(args.overloaded_models.is_empty());
    }

    #[test]
    fn parses_the_simulation_flags() {
        let args = run(&[
            "--context-window=5000",
            "--min-cacheable-tokens",
            "1",
            "--overloaded-model",
            "a",
            "--overloaded-model=b",
        ])
        .expect("valid");
        assert_eq!(args.context_window, Some(5000));
        assert_eq!(args.min_cacheable_tokens, Some(1));
        assert_eq!(args.overloaded_models, vec!["a", "b"]);
        let args = run(&["--context-window", "none"]).expect("valid");
        assert_eq!(args.context_window, None);
        assert!(run(&["--context-window", "big"]).is_err());
        assert!(run(&["--min-cacheable-tokens", "-1"]).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--port"]).is_err());
        assert!(run(&["--port", "x"]).is_err());
        assert!(run(&["--nope"]).is_err());
        assert_eq!(run(&["-h"]).err().as_deref(), Some("help"));
    }
}
