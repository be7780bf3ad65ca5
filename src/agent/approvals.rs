//! A turn's person in the loop: requests for approval and questions stored
//! in the session store (so an answer sent to any instance reaches the
//! turn), the wait for the answer, and the turn's clock, which stands still
//! while a person is asked.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::events::TurnLog;
use super::running::{Cancel, Canceller};
use super::turn::TurnEvent;
use crate::domain::SessionId;
use crate::permissions::{Rule, RuleSource};
use crate::store::{Answering, DynStore, PersonRequest, RequestKind};
use crate::tools::person::{Answer, Ask, Person};

/// How often a waiting turn looks in the store for the answer.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// One request of a turn and how it was decided, as the chat response and
/// the `done` frame list them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PermissionRecord {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: Uuid,
    /// `permission` (may a call run) or `question` (AskUserQuestion).
    pub kind: RequestKind,
    #[schema(example = "toolu_01A")]
    pub tool_use_id: String,
    #[schema(example = "Bash")]
    pub tool_name: String,
    #[schema(value_type = Object, example = json!({"command": "rm -rf build"}))]
    pub tool_input: Value,
    /// `allow` or `deny` (for a question: `allow` when it was answered).
    #[schema(example = "allow")]
    pub decision: String,
    /// `user` (someone answered through the API), `timeout` (nobody
    /// answered within defaults.permission_timeout_secs), `interrupt`,
    /// `turn_timeout` or `shutdown` (the turn ended while waiting).
    #[schema(example = "user")]
    pub decided_by: String,
    /// The person's message with a denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The allow rule kept for the rest of the session (`remember: session`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remembered_rule: Option<String>,
}

/// The turn's deadline, which does not run while a person is being asked:
/// like Claude Code, a turn waits for the person, and that wait is bounded
/// by `defaults.permission_timeout_secs` instead.
#[derive(Clone)]
pub(super) struct TurnClock {
    state: Arc<watch::Sender<ClockState>>,
}

#[derive(Clone, Copy)]
struct ClockState {
    /// Requests being waited for right now.
    waiting: usize,
    /// Since when at least one was.
    since: Option<Instant>,
    /// Time spent waiting, summed over finished waits.
    paused: Duration,
}

/// Holds the clock still until dropped.
pub(super) struct Pause {
    clock: TurnClock,
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.clock.state.send_modify(|s| {
            s.waiting = s.waiting.saturating_sub(1);
            if s.waiting == 0
                && let Some(since) = s.since.take()
            {
                s.paused += since.elapsed();
            }
        });
    }
}

impl TurnClock {
    pub(super) fn new() -> Self {
        let (state, _) = watch::channel(ClockState {
            waiting: 0,
            since: None,
            paused: Duration::ZERO,
        });
        Self {
            state: Arc::new(state),
        }
    }

    fn pause(&self) -> Pause {
        self.state.send_modify(|s| {
            if s.waiting == 0 {
                s.since = Some(Instant::now());
            }
            s.waiting += 1;
        });
        Pause {
            clock: self.clone(),
        }
    }

    /// Cancels the turn once it has run `timeout`, not counting the time
    /// it waited for a person.
    pub(super) async fn enforce(self, started: Instant, timeout: Duration, canceller: Canceller) {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            if state.waiting > 0 {
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let due = started + timeout + state.paused;
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    canceller.cancel(Cancel::TimedOut);
                    return;
                }
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Asks through the session store on behalf of one turn.
pub(super) struct Approvals {
    store: DynStore,
    session: SessionId,
    timeout: Duration,
    log: Arc<TurnLog>,
    clock: TurnClock,
    canceller: Canceller,
    remembered: Mutex<Vec<Rule>>,
    records: Mutex<Vec<PermissionRecord>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Approvals {
    /// The turn's approvals, starting from the allow rules the session's
    /// earlier approvals remembered.
    pub(super) async fn new(
        store: DynStore,
        session: SessionId,
        timeout: Duration,
        log: Arc<TurnLog>,
        clock: TurnClock,
        canceller: Canceller,
    ) -> Arc<Self> {
        let rules = match store.allow_rules(session).await {
            Ok(rules) => rules,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the session's remembered rules");
                Vec::new()
            }
        };
        let remembered = rules
            .iter()
            .filter_map(|text| Rule::parse(text, RuleSource::Remembered).ok())
            .collect();
        close_abandoned(&store, session).await;
        Arc::new(Self {
            store,
            session,
            timeout,
            log,
            clock,
            canceller,
            remembered: Mutex::new(remembered),
            records: Mutex::new(Vec::new()),
        })
    }

    /// Every request of the turn so far, in order.
    pub(super) fn records(&self) -> Vec<PermissionRecord> {
        lock(&self.records).clone()
    }

    /// Waits for the answer to `request_id`, or gives up (the person's
    /// time ran out, or the turn ended) and records that as the answer.
    async fn wait(&self, request_id: Uuid) -> Value {
        let _pause = self.clock.pause();
        let deadline = Instant::now() + self.timeout;
        loop {
            tokio::select! {
                biased;
                () = self.canceller.token.cancelled() => {
                    let by = match self.canceller.reason() {
                        Some(Cancel::TimedOut) => "turn_timeout",
                        Some(Cancel::Shutdown) => "shutdown",
                        Some(Cancel::Interrupted) | None => "interrupt",
                    };
                    return self.give_up(request_id, by, true).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return self.give_up(request_id, "timeout", false).await;
                }
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
            match self.store.request(self.session, request_id).await {
                Ok(Some(PersonRequest {
                    answer: Some(answer),
                    ..
                })) => return answer,
                Ok(Some(_)) => {}
                Ok(None) => return denial("session_deleted"),
                Err(err) => tracing::warn!(error = %err, "could not read a permission request"),
            }
        }
    }

    /// Stores a denial by `by` as the answer; a person's answer that came
    /// first stands, unless the turn is ending anyway.
    async fn give_up(&self, request_id: Uuid, by: &str, ending: bool) -> Value {
        let denied = denial(by);
        match self
            .store
            .answer_request(self.session, request_id, &denied)
            .await
        {
            Ok(Answering::AlreadyAnswered(answer)) if !ending => answer,
            Ok(_) => denied,
            Err(err) => {
                tracing::warn!(error = %err, "could not close a permission request");
                denied
            }
        }
    }

    fn refusal(&self, ask: &Ask<'_>, answer: &Value) -> String {
        let kind = ask.kind;
        let what = match kind {
            RequestKind::Permission => "the call was not run",
            RequestKind::Question => "the questions were not answered",
        };
        let message = answer["message"].as_str().filter(|m| !m.trim().is_empty());
        match answer["decided_by"].as_str().unwrap_or("user") {
            "timeout" if kind == RequestKind::Permission => format!(
                "Nobody answered the request for approval within {} seconds \
                 (defaults.permission_timeout_secs). {}",
                self.timeout.as_secs(),
                ask.refusal
            ),
            "timeout" => format!(
                "Nobody answered within {} seconds (defaults.permission_timeout_secs), so {what}. \
                 Continue without the answers, or say what you need.",
                self.timeout.as_secs()
            ),
            "interrupt" => format!("The user interrupted the turn while being asked, so {what}."),
            "turn_timeout" => format!("The turn timed out while the user was being asked, so {what}."),
            "shutdown" => format!("The service shut down while the user was being asked, so {what}."),
            "session_deleted" => format!("The session was deleted while the user was being asked, so {what}."),
            _ => match (kind, message) {
                (RequestKind::Permission, Some(message)) => format!(
                    "The user denied this call, so it was not run. The user said: {message}"
                ),
                (RequestKind::Permission, None) => "The user denied this call, so it was not run. \
                     Stop and wait for the user to tell you how to proceed, or take another approach."
                    .to_owned(),
                (RequestKind::Question, Some(message)) => format!(
                    "The user declined to answer the questions. The user said: {message}"
                ),
                (RequestKind::Question, None) => {
                    "The user declined to answer the questions.".to_owned()
                }
            },
        }
    }
}

/// Denies what an earlier turn of the session left unanswered (its
/// instance stopped while it waited): only the lease holder asks, so no
/// live turn waits for those.
async fn close_abandoned(store: &DynStore, session: SessionId) {
    for kind in [RequestKind::Permission, RequestKind::Question] {
        let Ok(pending) = store.pending_requests(session, kind).await else {
            continue;
        };
        for request in pending {
            if let Err(err) = store
                .answer_request(session, request.id, &denial("turn_ended"))
                .await
            {
                tracing::warn!(error = %err, "could not close an abandoned request");
            }
        }
    }
}

/// The answer stored when nobody decided: a denial, saying who gave up.
fn denial(by: &str) -> Value {
    json!({"decision": "deny", "decided_by": by})
}

#[async_trait]
impl Person for Approvals {
    async fn ask(&self, ask: Ask<'_>) -> Answer {
        let request = PersonRequest {
            id: Uuid::new_v4(),
            kind: ask.kind,
            tool_use_id: ask.tool_use_id.to_owned(),
            tool_name: ask.tool_name.to_owned(),
            tool_input: ask.tool_input.clone(),
            reason: ask.reason.to_owned(),
            created_at: Utc::now().trunc_subsecs(3),
            answer: None,
        };
        if let Err(err) = self.store.add_request(self.session, &request).await {
            tracing::warn!(error = %err, "could not store a permission request");
            return Answer {
                allow: false,
                refusal: "The request for the user's decision could not be recorded (the session \
                          store failed), so the call was not run."
                    .to_owned(),
                updated_input: None,
                answers: None,
            };
        }
        self.log.emit(TurnEvent::PersonRequest {
            kind: ask.kind,
            request_id: request.id,
            tool_use_id: request.tool_use_id.clone(),
            tool_name: request.tool_name.clone(),
            tool_input: request.tool_input.clone(),
            reason: ask.reason.to_owned(),
        });
        let answer = {
            let _waiting = crate::metrics::PendingRequest::new(ask.kind);
            self.wait(request.id).await
        };
        let allow = answer["decision"] == "allow";
        let rule = answer["rule"].as_str().filter(|_| allow).map(str::to_owned);
        if let Some(text) = &rule
            && let Ok(parsed) = Rule::parse(text, RuleSource::Remembered)
        {
            lock(&self.remembered).push(parsed);
        }
        tracing::info!(
            kind = ask.kind.as_str(),
            tool = ask.tool_name,
            decision = if allow { "allow" } else { "deny" },
            decided_by = answer["decided_by"].as_str().unwrap_or("user"),
            "person asked"
        );
        lock(&self.records).push(PermissionRecord {
            request_id: request.id,
            kind: ask.kind,
            tool_use_id: request.tool_use_id,
            tool_name: request.tool_name,
            tool_input: request.tool_input,
            decision: if allow { "allow" } else { "deny" }.to_owned(),
            decided_by: answer["decided_by"].as_str().unwrap_or("user").to_owned(),
            message: answer["message"].as_str().map(str::to_owned),
            remembered_rule: rule,
        });
        Answer {
            allow,
            refusal: if allow {
                String::new()
            } else {
                self.refusal(&ask, &answer)
            },
            updated_input: answer
                .get("updated_input")
                .filter(|v| v.is_object() && allow)
                .cloned(),
            answers: answer.get("answers").and_then(Value::as_object).cloned(),
        }
    }

    fn remembered(&self) -> Vec<Rule> {
        lock(&self.remembered).clone()
    }
}
