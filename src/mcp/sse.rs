//! The older MCP HTTP+SSE transport (protocol 2024-11-05), which `rmcp` no
//! longer ships: GET an event stream that announces a POST endpoint, then
//! send requests there and read the replies from the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("invalid url: {0}")]
    Url(#[from] url::ParseError),
    #[error("invalid header '{0}'")]
    Header(String),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("event stream: {0}")]
    Stream(String),
    #[error("the server's message endpoint {0} is on another origin")]
    ForeignEndpoint(String),
}

/// A client connection over the SSE transport, usable wherever `rmcp`
/// takes a client transport.
pub struct SseTransport {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: JoinHandle<()>,
}

impl SseTransport {
    /// Opens the event stream and waits for the server to announce where
    /// messages go. The caller bounds the wait.
    pub async fn connect(url: &str, headers: &BTreeMap<String, String>) -> Result<Self, SseError> {
        let url = Url::parse(url)?;
        let headers = header_map(headers)?;
        // No overall timeout: the event stream lives as long as the session.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()?;
        let response = client
            .get(url.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(SseError::Status {
                status: status.as_u16(),
                body: shorten(&body),
            });
        }
        let mut events = response.bytes_stream().eventsource();
        let endpoint = loop {
            match events.next().await {
                Some(Ok(event)) if event.event == "endpoint" => {
                    break url.join(event.data.trim())?;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(SseError::Stream(e.to_string())),
                None => {
                    return Err(SseError::Stream(
                        "stream ended before the server announced its endpoint".into(),
                    ));
                }
            }
        };
        // The configured headers (often a bearer token) go with every POST;
        // a server must not be able to redirect them to another host.
        if endpoint.origin() != url.origin() {
            return Err(SseError::ForeignEndpoint(endpoint.to_string()));
        }

        let (tx, incoming) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) if event.event == "message" || event.event.is_empty() => {
                        match serde_json::from_str::<ServerJsonRpcMessage>(&event.data) {
                            Ok(message) => {
                                if tx.send(message).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring undecodable MCP message");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "MCP event stream failed");
                        break;
                    }
                }
            }
            // Dropping `tx` here ends `receive`, which tells rmcp the
            // connection is gone.
        });
        Ok(Self {
            client,
            endpoint,
            headers,
            incoming,
            reader,
        })
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .json(&item);
        async move {
            let response = request.send().await?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = response.text().await.unwrap_or_default();
                Err(SseError::Status {
                    status: status.as_u16(),
                    body: shorten(&body),
                })
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.incoming.recv()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.reader.abort();
        std::future::ready(Ok(()))
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, SseError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| SseError::Header(name.clone()))?;
        let value = HeaderValue::from_str(value).map_err(|_| SseError::Header(name.to_string()))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// Error bodies end up in tool results and logs; a whole HTML page helps no one.
fn shorten(body: &str) -> String {
    const LIMIT: usize = 300;
    match body.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}
