//! The measurements against one running service and its fake upstream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::proc::{self, ProcSample};
use crate::sse::Frames;
use crate::stats::Summary;

#[derive(Debug, Clone)]
pub struct Options {
    pub service: String,
    pub fake: String,
    /// A relay in front of the service that ACKs at once (see relay.rs).
    pub service_acked: Option<String>,
    pub backend: String,
    /// How the run is named in the report (default: the backend).
    pub label: String,
    pub service_pid: Option<u32>,
    /// The service's log file, scanned for warnings at the end.
    pub service_log: Option<std::path::PathBuf>,
    pub fake_pid: Option<u32>,
    pub clk_tck: f64,
    pub warmup: usize,
    pub requests: usize,
    pub stream_requests: usize,
    pub rotate: usize,
    pub concurrency: usize,
    pub duration: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackendResults {
    pub backend: String,
    pub label: String,
    /// Turns per session before a fresh one is created.
    pub rotate: usize,
    /// Unmeasured turns before phases 1 and 2.
    pub warmup: usize,
    pub chat: ChatResults,
    pub stream: StreamResults,
    pub throughput: ThroughputResults,
    pub memory: MemoryResults,
    pub sessions_created: usize,
    pub active_sessions_after: Option<u64>,
    /// WARN and ERROR lines in the service's log over the whole run.
    #[serde(default)]
    pub log_warnings: usize,
    #[serde(default)]
    pub log_samples: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChatResults {
    pub service: Summary,
    pub direct: Summary,
    /// Per request, service minus the direct call made right after it.
    pub paired_overhead: Summary,
    /// Service and direct p50 at the first turn of a session and at the last
    /// before the session is replaced (history grows in between).
    pub first_turn: (f64, f64),
    pub last_turn: (f64, f64),
    pub upstream_request_bytes: (usize, usize),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StreamResults {
    pub service_first: Summary,
    /// The same, read through a relay that acknowledges the service's data
    /// at once (empty when not measured).
    #[serde(default)]
    pub acked_first: Summary,
    pub direct_first: Summary,
    pub service_total: Summary,
    pub direct_total: Summary,
    pub paired_overhead: Summary,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ThroughputResults {
    pub workers: usize,
    pub duration_s: f64,
    pub turns: usize,
    pub turns_per_s: f64,
    pub latency: Summary,
    /// Turns finished in each second of the window.
    #[serde(default)]
    pub per_second: Vec<usize>,
    /// Failed turns by HTTP status (`transport` for connection errors).
    pub errors: BTreeMap<String, usize>,
    pub error_samples: Vec<String>,
    pub sessions_created: usize,
    pub service_cpu_ms_per_turn: Option<f64>,
    pub fake_cpu_ms_per_turn: Option<f64>,
    pub service_cpu_share: Option<f64>,
    /// The load generator's own CPU time per turn (its relays not included).
    #[serde(default)]
    pub loadgen_cpu_ms_per_turn: Option<f64>,
    /// Share of the whole machine's CPU time that was busy during the window.
    #[serde(default)]
    pub machine_cpu_busy: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MemoryResults {
    pub idle: Option<ProcSample>,
    pub after_latency: Option<ProcSample>,
    pub after_load: Option<ProcSample>,
    pub health_memory_mb_idle: Option<f64>,
    pub health_memory_mb_after_load: Option<f64>,
}

/// What the service is asked; a realistic short instruction.
fn message(i: usize) -> String {
    format!("Request {i}: summarise the last change to the parser in one sentence, please.")
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Clone)]
struct Target {
    service: String,
    service_acked: Option<String>,
    fake: String,
    /// Measured calls.
    http: reqwest::Client,
    /// The fake's control endpoints, on their own connections: a large
    /// `/_fake/requests` answer on the connection the next measured call uses
    /// leaves unacknowledged data behind it, and the fake (no `TCP_NODELAY`)
    /// then holds that call's later SSE writes for a delayed ACK (~40 ms).
    control: reqwest::Client,
}

impl Target {
    fn new(opts: &Options) -> Result<Target> {
        Ok(Target {
            service: opts.service.trim_end_matches('/').to_owned(),
            service_acked: opts
                .service_acked
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            fake: opts.fake.trim_end_matches('/').to_owned(),
            http: client()?,
            control: client()?,
        })
    }

    async fn create_session(&self, user: &str) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/api/v1/sessions", self.service))
            .json(&json!({"user_id": user}))
            .send()
            .await
            .context("POST /api/v1/sessions")?;
        let status = response.status();
        let body: Value = response.json().await.context("session body")?;
        ensure!(status.as_u16() == 201, "create session: {status} {body}");
        body["session_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no session_id in {body}"))
    }

    async fn health(&self) -> Result<Value> {
        let response = self
            .control
            .get(format!("{}/health", self.service))
            .send()
            .await
            .context("GET /health")?;
        response.json().await.context("health body")
    }

    async fn fake_reset(&self) -> Result<()> {
        let response = self
            .control
            .post(format!("{}/_fake/reset", self.fake))
            .send()
            .await
            .context("POST /_fake/reset")?;
        ensure!(
            response.status().is_success(),
            "fake reset: {}",
            response.status()
        );
        Ok(())
    }

    /// The body of the last request the fake answered with 200.
    async fn last_upstream_body(&self) -> Result<Vec<u8>> {
        let response = self
            .control
            .get(format!("{}/_fake/requests", self.fake))
            .send()
            .await
            .context("GET /_fake/requests")?;
        let recorded: Vec<Value> = response.json().await.context("recorded requests")?;
        let last = recorded
            .iter()
            .rev()
            .find(|r| r["status"] == 200)
            .ok_or_else(|| anyhow!("the fake recorded no successful request"))?;
        ensure!(
            last["body"]["stream"] == true,
            "the service's upstream request is not streamed"
        );
        serde_json::to_vec(&last["body"]).context("re-encoding the upstream body")
    }

    /// One `/api/v1/chat` turn: round-trip time.
    async fn chat(&self, session: &str, text: &str) -> Result<Duration> {
        let body = serde_json::to_vec(&json!({"session_id": session, "message": text}))?;
        let start = Instant::now();
        let response = self
            .http
            .post(format!("{}/api/v1/chat", self.service))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /api/v1/chat")?;
        let status = response.status();
        let bytes = response.bytes().await.context("chat body")?;
        let elapsed = start.elapsed();
        if status.as_u16() != 200 {
            bail!(ChatError {
                status: status.as_u16().to_string(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        let value: Value = serde_json::from_slice(&bytes).context("chat JSON")?;
        let expected = format!("Echo: {text}");
        ensure!(
            value["text"] == expected.as_str(),
            "unexpected answer: {}",
            value["text"]
        );
        Ok(elapsed)
    }

    /// The same Messages API call the service made, straight to the fake:
    /// round-trip time of the whole SSE body.
    async fn direct(&self, body: &[u8]) -> Result<Duration> {
        let start = Instant::now();
        let response = self
            .direct_request(body)
            .send()
            .await
            .context("POST /v1/messages")?;
        let status = response.status();
        let bytes = response.bytes().await.context("messages body")?;
        let elapsed = start.elapsed();
        ensure!(status.as_u16() == 200, "direct call: {status}");
        ensure!(
            bytes.windows(12).any(|w| w == b"message_stop"),
            "direct stream has no message_stop"
        );
        Ok(elapsed)
    }

    fn direct_request(&self, body: &[u8]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/messages", self.fake))
            .header("content-type", "application/json")
            .header("x-api-key", "bench-key")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_vec())
    }

    /// `/api/v1/chat/stream`: time to the first `text_delta` frame and to the
    /// end of the stream.
    async fn chat_stream(
        &self,
        base: &str,
        session: &str,
        text: &str,
    ) -> Result<(Duration, Duration)> {
        let body = serde_json::to_vec(&json!({"session_id": session, "message": text}))?;
        let start = Instant::now();
        let response = self
            .http
            .post(format!("{base}/api/v1/chat/stream"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /api/v1/chat/stream")?;
        ensure!(
            response.status().as_u16() == 200,
            "stream: {}",
            response.status()
        );
        read_events(response, start, "text_delta", &["done"]).await
    }

    /// Direct streaming call: time to the first `content_block_delta` event.
    async fn direct_stream(&self, body: &[u8]) -> Result<(Duration, Duration)> {
        let start = Instant::now();
        let response = self
            .direct_request(body)
            .send()
            .await
            .context("POST /v1/messages")?;
        ensure!(
            response.status().as_u16() == 200,
            "direct stream: {}",
            response.status()
        );
        read_events(response, start, "content_block_delta", &["message_stop"]).await
    }
}

#[derive(Debug)]
struct ChatError {
    status: String,
    body: String,
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for ChatError {}

/// Reads an SSE response to its end; the first-event time is taken when the
/// chunk holding the first `first` frame arrived.
async fn read_events(
    response: reqwest::Response,
    start: Instant,
    first: &str,
    last: &[&str],
) -> Result<(Duration, Duration)> {
    let mut frames = Frames::default();
    let mut first_at = None;
    let mut ended = false;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let arrived = start.elapsed();
        let chunk = chunk.context("reading the event stream")?;
        for kind in frames.push(&chunk) {
            if kind == "error" {
                bail!("error frame in the stream");
            }
            if kind == first && first_at.is_none() {
                first_at = Some(arrived);
            }
            if last.contains(&kind.as_str()) {
                ended = true;
            }
        }
    }
    let total = start.elapsed();
    ensure!(ended, "the stream ended without {last:?}");
    let first_at = first_at.ok_or_else(|| anyhow!("no {first} frame"))?;
    Ok((first_at, total))
}

fn health_memory(health: &Value) -> Option<f64> {
    health["memory_mb"].as_f64()
}

/// Phases 1 and 2 (sequential, one connection each way), on a
/// single-threaded runtime so the timings carry no cross-thread wake-ups.
pub fn sequential(opts: &Options) -> Result<(ChatResults, StreamResults, usize)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(async {
        let target = Target::new(opts)?;
        let mut sessions = 0usize;
        let chat = chat_latency(&target, opts, &mut sessions).await?;
        let stream = stream_latency(&target, opts, &mut sessions).await?;
        Ok((chat, stream, sessions))
    })
}

async fn chat_latency(
    target: &Target,
    opts: &Options,
    sessions: &mut usize,
) -> Result<ChatResults> {
    let mut service = Vec::with_capacity(opts.requests);
    let mut direct = Vec::with_capacity(opts.requests);
    let mut paired = Vec::with_capacity(opts.requests);
    let mut first = (Vec::new(), Vec::new());
    let mut last = (Vec::new(), Vec::new());
    let mut bytes = (usize::MAX, 0usize);
    let mut session = String::new();
    for i in 0..opts.warmup + opts.requests {
        let position = i % opts.rotate;
        if position == 0 {
            session = target.create_session("bench-latency").await?;
            *sessions += 1;
        }
        target.fake_reset().await?;
        let text = message(i);
        let through = target
            .chat(&session, &text)
            .await
            .with_context(|| format!("chat request {i}"))?;
        let body = target.last_upstream_body().await?;
        let straight = target.direct(&body).await?;
        if i < opts.warmup {
            continue;
        }
        let (s, d) = (ms(through), ms(straight));
        service.push(s);
        direct.push(d);
        paired.push(s - d);
        bytes = (bytes.0.min(body.len()), bytes.1.max(body.len()));
        if position == 0 {
            first.0.push(s);
            first.1.push(d);
        } else if position == opts.rotate - 1 {
            last.0.push(s);
            last.1.push(d);
        }
    }
    target.fake_reset().await?;
    Ok(ChatResults {
        service: Summary::of(&service),
        direct: Summary::of(&direct),
        paired_overhead: Summary::of(&paired),
        first_turn: (Summary::of(&first.0).p50, Summary::of(&first.1).p50),
        last_turn: (Summary::of(&last.0).p50, Summary::of(&last.1).p50),
        upstream_request_bytes: bytes,
    })
}

async fn stream_latency(
    target: &Target,
    opts: &Options,
    sessions: &mut usize,
) -> Result<StreamResults> {
    let n = opts.stream_requests;
    let (mut sf, mut df, mut st, mut dt, mut paired) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut af = Vec::new();
    let mut session = String::new();
    for i in 0..opts.warmup + n {
        if i.is_multiple_of(opts.rotate) {
            session = target.create_session("bench-stream").await?;
            *sessions += 1;
        }
        target.fake_reset().await?;
        let (first, total) = target
            .chat_stream(&target.service, &session, &message(i))
            .await
            .with_context(|| format!("stream request {i}"))?;
        let body = target.last_upstream_body().await?;
        let (dfirst, dtotal) = target.direct_stream(&body).await?;
        if let Some(acked) = &target.service_acked {
            let (first, _) = target
                .chat_stream(acked, &session, &format!("again: {}", message(i)))
                .await
                .with_context(|| format!("stream request {i} through the relay"))?;
            if i >= opts.warmup {
                af.push(ms(first));
            }
        }
        if i < opts.warmup {
            continue;
        }
        sf.push(ms(first));
        df.push(ms(dfirst));
        st.push(ms(total));
        dt.push(ms(dtotal));
        paired.push(ms(first) - ms(dfirst));
    }
    target.fake_reset().await?;
    Ok(StreamResults {
        service_first: Summary::of(&sf),
        acked_first: Summary::of(&af),
        direct_first: Summary::of(&df),
        service_total: Summary::of(&st),
        direct_total: Summary::of(&dt),
        paired_overhead: Summary::of(&paired),
    })
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    /// Turns finished in each second of the window.
    per_second: Vec<usize>,
    errors: BTreeMap<String, usize>,
    samples: Vec<String>,
    sessions: usize,
}

/// Phase 3: `concurrency` workers, each with its own sessions, sequential
/// turns for `duration`; only turns finished inside the window count.
pub fn throughput(opts: &Options) -> Result<ThroughputResults> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(throughput_async(opts))
}

async fn throughput_async(opts: &Options) -> Result<ThroughputResults> {
    let target = Target::new(opts)?;
    target.fake_reset().await?;
    // Every worker has its first session before the clock starts.
    let mut first_sessions = Vec::with_capacity(opts.concurrency);
    for w in 0..opts.concurrency {
        first_sessions.push(target.create_session(&format!("bench-load-{w}")).await?);
    }
    let tally = Arc::new(Mutex::new(Tally {
        sessions: opts.concurrency,
        ..Tally::default()
    }));

    let cpu_before = (
        opts.service_pid.and_then(proc::cpu_ticks),
        opts.fake_pid.and_then(proc::cpu_ticks),
        proc::cpu_ticks(std::process::id()),
        proc::machine_ticks(),
    );
    let start = Instant::now();
    let deadline = start + opts.duration;

    // The fake records every request; forget them regularly so its memory
    // stays flat during the run.
    let resetter = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = target.fake_reset().await;
            }
        })
    };

    let mut workers = Vec::with_capacity(opts.concurrency);
    for (w, session) in first_sessions.into_iter().enumerate() {
        let target = target.clone();
        let tally = tally.clone();
        let rotate = opts.rotate;
        workers.push(tokio::spawn(async move {
            let mut session = session;
            let mut local = Tally::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                if i > 0 && i.is_multiple_of(rotate) {
                    match target.create_session(&format!("bench-load-{w}")).await {
                        Ok(s) => {
                            session = s;
                            local.sessions += 1;
                        }
                        Err(e) => {
                            *local.errors.entry("create_session".into()).or_default() += 1;
                            if local.samples.len() < 3 {
                                local.samples.push(format!("{e:#}"));
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let outcome = target.chat(&session, &message(i)).await;
                let done = Instant::now();
                i += 1;
                if done > deadline {
                    break;
                }
                match outcome {
                    Ok(latency) => {
                        local.latencies.push(ms(latency));
                        let second = (done - start).as_secs() as usize;
                        if local.per_second.len() <= second {
                            local.per_second.resize(second + 1, 0);
                        }
                        local.per_second[second] += 1;
                    }
                    Err(e) => {
                        let key = e
                            .downcast_ref::<ChatError>()
                            .map_or_else(|| "transport".to_owned(), |c| c.status.clone());
                        *local.errors.entry(key).or_default() += 1;
                        if local.samples.len() < 3 {
                            local.samples.push(format!("{e:#}"));
                        }
                    }
                }
            }
            let mut all = tally.lock().await;
            all.latencies.extend(local.latencies);
            if all.per_second.len() < local.per_second.len() {
                all.per_second.resize(local.per_second.len(), 0);
            }
            for (total, n) in all.per_second.iter_mut().zip(local.per_second) {
                *total += n;
            }
            for (k, v) in local.errors {
                *all.errors.entry(k).or_default() += v;
            }
            for s in local.samples {
                if all.samples.len() < 8 && !all.samples.contains(&s) {
                    all.samples.push(s);
                }
            }
            all.sessions += local.sessions;
        }));
    }
    for worker in workers {
        worker.await.context("worker panicked")?;
    }
    let window = opts.duration.as_secs_f64();
    resetter.abort();
    let cpu_after = (
        opts.service_pid.and_then(proc::cpu_ticks),
        opts.fake_pid.and_then(proc::cpu_ticks),
        proc::cpu_ticks(std::process::id()),
        proc::machine_ticks(),
    );
    target.fake_reset().await?;

    let tally = tally.lock().await;
    let turns = tally.latencies.len();
    let per_turn = |before: Option<u64>, after: Option<u64>| {
        let (b, a) = (before?, after?);
        (turns > 0).then(|| (a - b) as f64 / opts.clk_tck * 1000.0 / turns as f64)
    };
    let service_cpu_ms_per_turn = per_turn(cpu_before.0, cpu_after.0);
    Ok(ThroughputResults {
        workers: opts.concurrency,
        duration_s: window,
        turns,
        turns_per_s: turns as f64 / window,
        latency: Summary::of(&tally.latencies),
        per_second: tally.per_second.clone(),
        errors: tally.errors.clone(),
        error_samples: tally.samples.clone(),
        sessions_created: tally.sessions,
        service_cpu_ms_per_turn,
        fake_cpu_ms_per_turn: per_turn(cpu_before.1, cpu_after.1),
        loadgen_cpu_ms_per_turn: per_turn(cpu_before.2, cpu_after.2),
        machine_cpu_busy: match (cpu_before.3, cpu_after.3) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        },
        service_cpu_share: service_cpu_ms_per_turn
            .map(|c| c * turns as f64 / 1000.0 / start.elapsed().as_secs_f64()),
    })
}

/// All phases for one backend.
pub fn run(opts: &Options) -> Result<BackendResults> {
    let health_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let health = |rt: &tokio::runtime::Runtime| -> Result<Value> {
        rt.block_on(async { Target::new(opts)?.health().await })
    };

    let idle_health = health(&health_runtime)?;
    ensure!(
        idle_health["status"] == "healthy",
        "service not healthy: {idle_health}"
    );
    ensure!(
        idle_health["storage_type"] == opts.backend.as_str(),
        "service runs {} storage, expected {}",
        idle_health["storage_type"],
        opts.backend
    );
    let mut memory = MemoryResults {
        idle: opts.service_pid.and_then(proc::sample),
        health_memory_mb_idle: health_memory(&idle_health),
        ..MemoryResults::default()
    };

    eprintln!("[{}] chat round trips and time to first byte", opts.label);
    let (chat, stream, sequential_sessions) = sequential(opts)?;
    memory.after_latency = opts.service_pid.and_then(proc::sample);

    let throughput = if opts.duration.is_zero() {
        ThroughputResults::default()
    } else {
        eprintln!(
            "[{}] {} workers for {:?}",
            opts.label, opts.concurrency, opts.duration
        );
        throughput(opts)?
    };
    memory.after_load = opts.service_pid.and_then(proc::sample);
    let after = health(&health_runtime)?;
    memory.health_memory_mb_after_load = health_memory(&after);

    let (log_warnings, log_samples) = opts
        .service_log
        .as_deref()
        .map(scan_log)
        .unwrap_or_default();
    Ok(BackendResults {
        log_warnings,
        log_samples,
        backend: opts.backend.clone(),
        label: opts.label.clone(),
        rotate: opts.rotate,
        warmup: opts.warmup,
        sessions_created: sequential_sessions + throughput.sessions_created,
        chat,
        stream,
        throughput,
        memory,
        active_sessions_after: after["active_sessions"].as_u64(),
    })
}

/// Counts WARN and ERROR lines; keeps a few, without timestamps and spans.
fn scan_log(path: &std::path::Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut count = 0;
    let mut samples: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        count += 1;
        let message: String = line[at + 1..].chars().take(400).collect();
        // Group by what is said, not by which request said it.
        let key: String = message.split(": ").skip(1).collect::<Vec<_>>().join(": ");
        let key: String = key.chars().take(80).collect();
        if samples.len() < 3 && !samples.iter().any(|s| s.contains(&key)) {
            samples.push(message);
        }
    }
    (count, samples)
}
