//! Callbacks: a finished turn's report POSTed to the `callback_url` its
//! request gave, signed with `api.callback_secret`, retried with backoff, and
//! sent only where WebFetch may go (the same address checks and setting).

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use url::Url;

use crate::config::Settings;
use crate::error::ApiError;
use crate::tools::web_fetch::resolve_checked;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-claude-agent-signature";
/// The header carrying the turn's id, so a receiver can drop repeats.
pub const TURN_HEADER: &str = "x-claude-agent-turn";
/// Longest `callback_url` taken.
const MAX_URL_CHARS: usize = 2048;
const ATTEMPTS: u32 = 5;
/// The wait before the first retry; it doubles after each one.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how one turn's report goes.
#[derive(Clone)]
pub struct Callback {
    url: Url,
    secret: SecretString,
    allow_private_networks: bool,
}

impl std::fmt::Debug for Callback {
    /// The URL may carry a token of the receiver's: only its host is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

impl Callback {
    /// A request's `callback_url`, refused (422) when callbacks are off,
    /// when it is not an http(s) URL, or when it points at an address
    /// WebFetch may not reach.
    pub async fn parse(raw: &str, settings: &Settings) -> Result<Self, ApiError> {
        let refuse = |problem: String| ApiError::validation("callback_url", problem);
        let Some(secret) = settings
            .api
            .callback_secret
            .secret()
            .filter(|_| settings.api.allow_callbacks)
        else {
            return Err(refuse(
                "callbacks are not enabled on this service (api.allow_callbacks)".into(),
            ));
        };
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(refuse(format!(
                "must be at most {MAX_URL_CHARS} characters"
            )));
        }
        let url = Url::parse(raw).map_err(|e| refuse(format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(refuse(
                "must be an http:// or https:// URL with a host".into(),
            ));
        }
        let callback = Self {
            url,
            secret,
            allow_private_networks: settings.tools.web_fetch.allow_private_networks,
        };
        callback.addresses().await.map_err(refuse)?;
        Ok(callback)
    }

    async fn addresses(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        let host = self.host();
        resolve_checked(&self.url, &host, self.allow_private_networks).await
    }

    fn host(&self) -> String {
        self.url
            .host_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    /// POSTs `body` (JSON), retrying connection failures, 429 and 5xx
    /// answers with backoff; gives up after `ATTEMPTS`, logging why.
    pub async fn deliver(self, turn: String, body: Vec<u8>) {
        let signature = signature(self.secret.expose_secret().as_bytes(), &body);
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match self.send(&turn, &signature, &body).await {
                Ok(()) => {
                    tracing::info!(host = %self.host(), attempt, "callback delivered");
                    return;
                }
                Err((why, retry)) if retry && attempt < ATTEMPTS => {
                    tracing::info!(host = %self.host(), attempt, error = %why, "callback failed; retrying");
                }
                Err((why, _)) => {
                    tracing::warn!(host = %self.host(), attempt, error = %why, "callback not delivered");
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    /// One attempt; the error says whether another is worth making.
    async fn send(&self, turn: &str, signature: &str, body: &[u8]) -> Result<(), (String, bool)> {
        // Checked again at each attempt: the name may resolve elsewhere now.
        let addrs = self.addresses().await.map_err(|why| (why, false))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .resolve_to_addrs(&self.host(), &addrs)
            .build()
            .map_err(|e| (format!("could not set up the request: {e}"), false))?;
        let response = client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(TURN_HEADER, turn)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (crate::agent::anthropic::error_chain(&e), true))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let retry = status.is_server_error() || status.as_u16() == 429;
            Err((format!("the receiver answered {status}"), retry))
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error cannot happen.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
