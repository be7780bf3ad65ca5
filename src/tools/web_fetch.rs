//! `WebFetch`: one web page as Markdown, or a small model's answer to the
//! call's prompt over it. The service fetches the page itself, so every
//! address a request goes to (each redirect included) is resolved first and
//! refused when it is the service's own network — loopback, private,
//! link-local, cloud metadata — and the connection is pinned to the address
//! that was checked, so a second DNS answer cannot point it elsewhere.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use url::Url;

use super::{Tool, ToolContext, ToolOutput, ToolSource};
use crate::agent::anthropic::error_chain;
use crate::agent::model::ModelClient;
use crate::agent::wire::{Message, ModelRequest};
use crate::config::{Settings, WebFetchSettings};
use crate::workspace::Workspace;

const NAME: &str = "WebFetch";
const MAX_REDIRECTS: usize = 10;
/// How long a fetched page is served from memory.
const CACHE_TTL: Duration = Duration::from_secs(15 * 60);
const CACHE_ENTRIES: usize = 32;
/// Markdown given to the model (or the small model), in characters.
const MAX_PAGE_CHARS: usize = 100_000;
const SMALL_MODEL_MAX_TOKENS: u32 = 4_096;

/// The web tools as a `ToolSource`, next to the built-ins.
pub struct WebTools {
    tools: Vec<Arc<dyn Tool>>,
}

impl WebTools {
    /// The tools `settings` enable; `model` answers prompts over pages when
    /// `defaults.small_model` is set.
    pub fn new(settings: &Settings, model: Option<Arc<dyn ModelClient>>) -> Self {
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        if settings.tools.web_fetch.enabled {
            let small_model = settings.defaults.small_model.clone();
            tools.push(Arc::new(WebFetchTool {
                settings: settings.tools.web_fetch.clone(),
                summariser: model.zip(small_model),
                cache: Mutex::new(HashMap::new()),
            }));
        }
        Self { tools }
    }
}

#[async_trait]
impl ToolSource for WebTools {
    async fn tools(&self, _workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
        self.tools.clone()
    }
}

/// A fetched page: where it ended up (after redirects) and its Markdown.
#[derive(Clone)]
struct Page {
    url: Url,
    markdown: String,
}

pub struct WebFetchTool {
    settings: WebFetchSettings,
    summariser: Option<(Arc<dyn ModelClient>, String)>,
    /// Pages by requested URL, with when they were fetched.
    cache: Mutex<HashMap<String, (Instant, Page)>>,
}

#[async_trait]
impl Tool for WebFetchTool {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> String {
        "Fetches one web page (http is upgraded to https) and returns what it says about the \
         prompt you give: the page converted to Markdown and read with your prompt in mind. Use \
         it for documentation, issues and articles the user points you to. It cannot log in, \
         run scripts or reach the service's own network; pages are cached for 15 minutes. \
         When a page redirects, the final address is reported."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri", "description": "The page to fetch"},
                "prompt": {"type": "string", "description": "What to find out from the page"}
            },
            "required": ["url", "prompt"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let (Some(raw), Some(prompt)) = (
            input.get("url").and_then(Value::as_str),
            input.get("prompt").and_then(Value::as_str),
        ) else {
            return ToolOutput::error("WebFetch needs a `url` and a `prompt` (both strings).");
        };
        let url = match Url::parse(raw.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            Ok(url) => {
                return ToolOutput::error(format!(
                    "Only http and https pages can be fetched, not {}:.",
                    url.scheme()
                ));
            }
            Err(e) => return ToolOutput::error(format!("'{raw}' is not a URL: {e}")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return ToolOutput::error("URLs with credentials in them are not fetched.");
        }
        let page = tokio::select! {
            page = self.page(url) => page,
            () = ctx.cancel.cancelled() => return ToolOutput::error("Interrupted."),
        };
        let page = match page {
            Ok(page) => page,
            Err(why) => return ToolOutput::error(why),
        };
        let (markdown, cut) = cut_chars(&page.markdown, MAX_PAGE_CHARS);
        let cut_note = if cut {
            format!(" (cut to its first {MAX_PAGE_CHARS} characters)")
        } else {
            String::new()
        };
        let Some((model, small_model)) = &self.summariser else {
            return ToolOutput::ok(format!(
                "Page {}{cut_note}, as Markdown; answer \"{prompt}\" from it.\n\n{markdown}",
                page.url
            ));
        };
        let mut request = ModelRequest::new(
            small_model.clone(),
            SMALL_MODEL_MAX_TOKENS,
            vec![Message::user_text(format!(
                "<page url=\"{}\">\n{markdown}\n</page>\n\n{prompt}",
                page.url
            ))],
        );
        request.system = vec![
            "You read one web page for a coding agent and answer its request using only what \
             the page says. Quote code, commands and values exactly; say plainly when the page \
             does not answer the request."
                .to_owned(),
        ];
        let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
        let answer = tokio::select! {
            answer = model.send(&request, &events) => answer,
            () = ctx.cancel.cancelled() => return ToolOutput::error("Interrupted."),
        };
        match answer {
            Ok(answer) => {
                let mut output = ToolOutput::ok(format!(
                    "From {}{cut_note}:\n\n{}",
                    page.url,
                    answer.text().trim()
                ));
                output
                    .model_usage
                    .push((answer.model.clone(), answer.usage));
                output
            }
            // The page itself is the next best thing.
            Err(e) => ToolOutput::ok(format!(
                "Page {}{cut_note}, as Markdown (the small model could not read it: {e}); \
                 answer \"{prompt}\" from it.\n\n{markdown}",
                page.url
            )),
        }
    }
}

impl WebFetchTool {
    /// The page at `url`, from the cache when fetched recently.
    async fn page(&self, url: Url) -> Result<Page, String> {
        let key = url.as_str().to_owned();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((fetched, page)) = cache.get(&key)
                && fetched.elapsed() < CACHE_TTL
            {
                return Ok(page.clone());
            }
        }
        let (url, markdown) = self.fetch(url).await?;
        let page = Page { url, markdown };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, (fetched, _)| fetched.elapsed() < CACHE_TTL);
        if cache.len() >= CACHE_ENTRIES
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (fetched, _))| *fetched)
                .map(|(key, _)| key.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(key, (Instant::now(), page.clone()));
        Ok(page)
    }

    /// Follows redirects, checking every hop, and reads the body as text.
    async fn fetch(&self, mut url: Url) -> Result<(Url, String), String> {
        let timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        for _ in 0..=MAX_REDIRECTS {
            let host = url
                .host_str()
                .ok_or_else(|| format!("{url} has no host."))?
                .trim_end_matches('.')
                .to_ascii_lowercase();
            self.check_domain(&host)?;
            let addrs = self.resolve(&url, &host).await?;
            let public = addrs.iter().all(|a| !is_internal(a.ip()));
            if url.scheme() == "http" && public {
                url.set_scheme("https")
                    .map_err(|()| format!("{url} cannot be upgraded to https."))?;
            }
            let port = url.port_or_known_default().unwrap_or(443);
            let pinned: Vec<SocketAddr> = addrs
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .user_agent(concat!(
                    env!("CARGO_PKG_NAME"),
                    "/",
                    env!("CARGO_PKG_VERSION")
                ))
                .resolve_to_addrs(&host, &pinned)
                .build()
                .map_err(|e| format!("Could not set up the request: {e}"))?;
            let response = client
                .get(url.clone())
                .header("accept", "text/html, text/markdown, text/plain, */*;q=0.5")
                .send()
                .await
                .map_err(|e| format!("Could not fetch {url}: {}", error_chain(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{url} answered {status} without a Location."))?;
                url = url
                    .join(location)
                    .map_err(|e| format!("{url} redirected to an invalid address: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!(
                        "The page redirected to {url}, which is not http(s)."
                    ));
                }
                continue;
            }
            if !status.is_success() {
                return Err(format!("{url} answered {status}."));
            }
            let kind = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/html")
                .to_ascii_lowercase();
            let body = self.read_body(response).await?;
            let text = String::from_utf8_lossy(&body);
            let markdown = if kind.contains("html") {
                to_markdown(&text)
            } else if kind.starts_with("text/")
                || kind.contains("json")
                || kind.contains("xml")
                || kind.contains("javascript")
            {
                text.into_owned()
            } else {
                return Err(format!(
                    "{url} is {kind}, not a page of text; download it with Bash (curl) if you need the file."
                ));
            };
            return Ok((url, markdown));
        }
        Err(format!(
            "More than {MAX_REDIRECTS} redirects; stopped at {url}."
        ))
    }

    fn check_domain(&self, host: &str) -> Result<(), String> {
        let within = |domain: &String| {
            let domain = domain.trim().trim_start_matches("*.").to_ascii_lowercase();
            host == domain || host.ends_with(&format!(".{domain}"))
        };
        if self.settings.blocked_domains.iter().any(within) {
            return Err(format!(
                "{host} is blocked by tools.web_fetch.blocked_domains."
            ));
        }
        if !self.settings.allowed_domains.is_empty()
            && !self.settings.allowed_domains.iter().any(within)
        {
            return Err(format!("{host} is not in tools.web_fetch.allowed_domains."));
        }
        Ok(())
    }

    async fn resolve(&self, url: &Url, host: &str) -> Result<Vec<SocketAddr>, String> {
        resolve_checked(url, host, self.settings.allow_private_networks).await
    }

    async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, String> {
        let cap = usize::try_from(self.settings.max_bytes).unwrap_or(usize::MAX);
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("The page broke off: {}", error_chain(&e)))?;
            let room = cap.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= cap {
                break;
            }
        }
        Ok(body)
    }
}

/// HTML to Markdown without scripts, styles and other non-content.
fn to_markdown(html: &str) -> String {
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "iframe", "svg", "head", "template", "canvas",
        ])
        .build();
    converter.convert(html).unwrap_or_else(|_| html.to_owned())
}

fn cut_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// Every address `host` (of `url`) resolves to, refused when one is internal
/// and private networks are not allowed (`tools.web_fetch.allow_private_networks`,
/// which callbacks follow too). Connect to the addresses returned, so a
/// second DNS answer cannot point elsewhere.
pub async fn resolve_checked(
    url: &Url,
    host: &str,
    allow_private_networks: bool,
) -> Result<Vec<SocketAddr>, String> {
    let port = url.port_or_known_default().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("Could not resolve {host}: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} has no address."));
    }
    if !allow_private_networks && let Some(internal) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, an address of a private, loopback, link-local or \
             metadata network; such addresses are not fetched or called back (tools.web_fetch.allow_private_networks).",
            internal.ip()
        ));
    }
    Ok(addrs)
}

/// Addresses of the service's own networks: loopback, private, link-local
/// (cloud metadata at 169.254.169.254 and fd00:ec2::254 included), shared
/// and reserved ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return internal_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            if s[0] == 0x2002 {
                return internal_v4(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 included
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
                || (v6.segments()[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised_in_every_form() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn html_becomes_markdown_without_scripts() {
        let markdown = to_markdown(
            "<html><head><title>t</title><style>p{}</style></head><body><h1>Install</h1>\
             <script>alert(1)</script><p>Run <code>make</code>.</p></body></html>",
        );
        assert!(markdown.contains("# Install"), "{markdown}");
        assert!(markdown.contains("`make`"), "{markdown}");
        assert!(!markdown.contains("alert"), "{markdown}");
    }
}
