//! `claude-agent-http healthcheck`: asks the running service's `/health`,
//! for Docker's HEALTHCHECK. Exit 0 only when it answers healthy.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;

pub async fn run(settings: &Settings) -> ExitCode {
    let host = match settings.api.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "[::1]",
        other => other,
    };
    let url = format!("http://{host}:{}/health", settings.api.port);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("healthcheck: {err}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) => {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if status.is_success() && body["status"] == "healthy" {
                println!("healthy");
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "unhealthy: {status} {}",
                    body["error"].as_str().unwrap_or("")
                );
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
