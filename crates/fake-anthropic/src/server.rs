//! The HTTP side: `/v1/messages`, the `/_fake/*` control endpoints, `/health`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cache::{self, CacheUsage, Prompt, PromptCache};
use crate::reply::Reply;
use crate::response::{self, Answer, Ending, Event, Limit, Plan};
use crate::validate::{self, ApiError};
use crate::{Recorded, Settings};

/// The real API's request size limit.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Gives the client time to read what was written before the connection is
/// dropped; the cut must land after the events, not race them.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

struct Inner {
    queue: VecDeque<Reply>,
    requests: Vec<Recorded>,
    settings: Settings,
    cache: PromptCache,
    /// How far the fake's clock is ahead of real time.
    clock_offset: Duration,
}

/// Shared between the server task and the [`crate::FakeAnthropic`] handle.
pub(crate) struct Shared {
    api_key: Option<String>,
    /// What `reset` goes back to.
    initial: Settings,
    started: Instant,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(api_key: Option<String>, settings: Settings) -> Shared {
        Shared {
            api_key,
            initial: settings.clone(),
            started: Instant::now(),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                requests: Vec::new(),
                settings,
                cache: PromptCache::default(),
                clock_offset: Duration::ZERO,
            }),
        }
    }

    /// A panicking test thread must not wedge the fake for the others.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, reply: Reply) {
        self.lock().queue.push_back(reply);
    }

    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Clears the queue, the recorded requests and the prompt cache, and
    /// puts the runtime settings back to how the fake was started.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.queue.clear();
        inner.requests.clear();
        inner.cache.clear();
        inner.settings = self.initial.clone();
    }

    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) -> Settings {
        let mut inner = self.lock();
        change(&mut inner.settings);
        inner.settings.clone()
    }

    /// Moves the fake's clock forward (cache entries expire by it) and
    /// returns how far ahead of real time it now is.
    pub fn advance_clock(&self, by: Duration) -> Duration {
        let mut inner = self.lock();
        inner.clock_offset = inner.clock_offset.saturating_add(by);
        inner.clock_offset
    }

    /// Runs the prompt through the cache as the request is answered.
    fn process_prompt(&self, prompt: &Prompt, model: &str) -> CacheUsage {
        let mut inner = self.lock();
        let now = self.started.elapsed() + inner.clock_offset;
        let min = inner
            .settings
            .min_cacheable_tokens
            .unwrap_or_else(|| cache::min_cacheable_tokens(model));
        inner.cache.process(prompt, min, now)
    }

    /// Takes the next scripted reply; an `Error` with `times > 1` stays at
    /// the front with one use less.
    fn next_reply(&self, last_user_text: &str) -> Option<Reply> {
        let mut inner = self.lock();
        let at = inner
            .queue
            .iter()
            .position(|reply| !reply.passed_over_by(last_user_text))?;
        let mut reply = inner.queue.remove(at)?;
        if let Reply::Unless {
            reply: inner_reply, ..
        } = reply
        {
            reply = *inner_reply;
        }
        if let Reply::Error {
            status,
            error_type,
            message,
            times,
            retry_after,
        } = &reply
            && *times > 1
        {
            inner.queue.insert(
                at,
                Reply::Error {
                    status: *status,
                    error_type: error_type.clone(),
                    message: message.clone(),
                    times: times - 1,
                    retry_after: retry_after.clone(),
                },
            );
        }
        Some(reply)
    }

    fn record(&self, headers: &HeaderMap, body: Value, status: u16, usage: Option<Value>) {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.lock().requests.push(Recorded {
            headers,
            body,
            status,
            usage,
        });
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/health", get(health))
        .route("/_fake/replies", post(push_replies))
        .route("/_fake/requests", get(list_requests))
        .route("/_fake/reset", post(reset))
        .route("/_fake/config", get(get_config).post(set_config))
        .route("/_fake/clock", post(advance_clock))
        .fallback(not_found)
        .with_state(shared)
}

fn request_id() -> HeaderValue {
    HeaderValue::from_str(&response::random_id("req"))
        .unwrap_or_else(|_| HeaderValue::from_static("req_01"))
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response
        .headers_mut()
        .insert(HeaderName::from_static("request-id"), request_id());
    response
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.status, response::error_json(error))
}

async fn health() -> Response {
    json_response(200, json!({"status": "ok"}).to_string())
}

async fn not_found() -> Response {
    error_response(&ApiError {
        status: 404,
        error_type: "not_found_error".into(),
        message: "Not Found".into(),
    })
}

async fn push_replies(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_response(&ApiError::invalid(format!("body is not JSON: {e}"))),
    };
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut replies = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<Reply>(item) {
            Ok(reply) => replies.push(reply),
            Err(e) => {
                return error_response(&ApiError::invalid(format!("replies.{i}: {e}")));
            }
        }
    }
    let queued = replies.len();
    for reply in replies {
        shared.push(reply);
    }
    json_response(
        200,
        json!({"queued": queued, "pending": shared.pending()}).to_string(),
    )
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    json_response(200, json!(shared.requests()).to_string())
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    json_response(200, json!({"reset": true}).to_string())
}

/// The body of `POST /_fake/config`: each field present is set, `null`
/// clears a limit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    #[serde(default, deserialize_with = "present")]
    context_window: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    min_cacheable_tokens: Option<Option<u64>>,
    #[serde(default)]
    overloaded_models: Option<Vec<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

fn parse_control<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("body is not valid: {e}")))
}

async fn get_config(State(shared): State<Arc<Shared>>) -> Response {
    json_response(200, json!(shared.settings()).to_string())
}

async fn set_config(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let change: ConfigChange = match parse_control(&body) {
        Ok(change) => change,
        Err(error) => return error_response(&error),
    };
    let settings = shared.update_settings(|settings| {
        if let Some(window) = change.context_window {
            settings.context_window = window;
        }
        if let Some(min) = change.min_cacheable_tokens {
            settings.min_cacheable_tokens = min;
        }
        if let Some(models) = change.overloaded_models {
            settings.overloaded_models = models;
        }
    });
    json_response(200, json!(settings).to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_ms: u64,
}

async fn advance_clock(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let change: ClockChange = match parse_control(&body) {
        Ok(change) => change,
        Err(error) => return error_response(&error),
    };
    let ahead = shared.advance_clock(Duration::from_millis(change.advance_ms));
    let ahead_ms = u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX);
    json_response(200, json!({"ahead_ms": ahead_ms}).to_string())
}

/// Every `anthropic-beta` value, whether sent as several headers or as one
/// comma-separated list.
fn betas(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks authentication and the version header, as the real API does before
/// it looks at the body.
fn check_headers(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = text("x-api-key").or_else(|| {
        text("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    });
    let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
        return Err(ApiError::authentication("x-api-key header is required"));
    };
    if let Some(expected) = &shared.api_key
        && key != expected
    {
        return Err(ApiError::authentication("invalid x-api-key"));
    }
    if text("anthropic-version").is_none_or(|v| v.trim().is_empty()) {
        return Err(ApiError::invalid("anthropic-version: header is required"));
    }
    Ok(())
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError {
                status: 413,
                error_type: "request_too_large".into(),
                message: "Request exceeds the maximum allowed number of bytes.".into(),
            };
            shared.record(&headers, Value::Null, error.status, None);
            return error_response(&error);
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes);
    let recorded_body = match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };

    let settings = shared.settings();
    let checked = check_headers(&shared, &headers)
        .and_then(|()| match &parsed {
            Ok(value) => validate::check_request(value, &betas(&headers)),
            Err(e) => Err(ApiError::invalid(format!(
                "There was an error parsing the body of your request: {e}"
            ))),
        })
        .and_then(|request| {
            let room = validate::check_context(&request, settings.context_window)?;
            Ok((request, room))
        })
        .and_then(|(request, room)| {
            if settings.overloaded_models.contains(&request.model) {
                return Err(ApiError {
                    status: 529,
                    error_type: "overloaded_error".into(),
                    message: "Overloaded".into(),
                });
            }
            Ok((request, room))
        });
    let (request, room) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            shared.record(&headers, recorded_body, error.status, None);
            return error_response(&error);
        }
    };

    let reply = shared
        .next_reply(&request.last_user_text)
        .unwrap_or_else(|| response::echo(&request));
    let plan = Plan::of(reply);

    if let Reply::Error {
        status,
        error_type,
        message,
        retry_after,
        ..
    } = &plan.base
    {
        shared.record(&headers, recorded_body, *status, None);
        tokio::time::sleep(plan.delay).await;
        let error = ApiError {
            status: *status,
            error_type: error_type.clone(),
            message: message.clone(),
        };
        let mut response = error_response(&error);
        if let Some(value) = retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if let (Ending::Error { error, .. }, false) = (&plan.ending, request.stream) {
        shared.record(&headers, recorded_body, error.status, None);
        tokio::time::sleep(plan.delay).await;
        return error_response(error);
    }

    let usage = shared.process_prompt(&request.prompt, &request.model);
    let answer = response::answer(
        &plan.base,
        &request,
        Limit::of(request.max_tokens, room),
        usage,
    );
    shared.record(
        &headers,
        recorded_body,
        200,
        Some(response::usage_value(&answer)),
    );

    if request.stream {
        stream_response(&plan, answer)
    } else {
        tokio::time::sleep(plan.delay).await;
        complete_response(&plan, &answer)
    }
}

fn complete_response(plan: &Plan, answer: &Answer) -> Response {
    match &plan.ending {
        Ending::Error { error, .. } => error_response(error),
        Ending::Cut(_) => {
            let body = Body::from_stream(futures::stream::once(async {
                tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut by script"))
            }));
            let mut response = Response::new(body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Ending::Complete => json_response(200, response::message_json(answer)),
    }
}

fn stream_response(plan: &Plan, answer: Answer) -> Response {
    let mut events = response::events(&answer);
    // Cuts and errors land before `message_stop` whatever the count, so a
    // scripted failure is always a failure.
    let (keep, tail) = match &plan.ending {
        Ending::Complete => (events.len(), None),
        Ending::Cut(after) => ((*after).min(events.len() - 1), None),
        Ending::Error { after, error } => ((*after).min(events.len() - 1), Some(error.clone())),
    };
    events.truncate(keep);
    let cut = matches!(plan.ending, Ending::Cut(_));
    if let Some(error) = &tail {
        events.push(Event::error(error));
    }
    let delay = plan.delay;

    let stream = async_stream::stream! {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            yield Ok::<Bytes, std::io::Error>(Bytes::from(event.to_wire()));
        }
        if cut {
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
            yield Err(std::io::Error::other("connection cut by script"));
        }
    };
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(HeaderName::from_static("request-id"), request_id());
    response
}
