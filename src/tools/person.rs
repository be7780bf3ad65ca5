//! Asking the person behind a session during a turn: whether a call may
//! run, or the answers to the model's questions. The turn loop supplies the
//! `Person`; tools and the tool set only ask.

use async_trait::async_trait;
use serde_json::Value;

use crate::permissions::Rule;
use crate::store::RequestKind;

/// What to put to the person.
pub struct Ask<'a> {
    pub kind: RequestKind,
    /// The model's id of the call that asks.
    pub tool_use_id: &'a str,
    pub tool_name: &'a str,
    pub tool_input: &'a Value,
    /// Why a person has to decide (empty for questions).
    pub reason: &'a str,
    /// The whole explanation the model gets when nobody decides.
    pub refusal: &'a str,
}

/// How the person (or the turn, giving up on them) answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The call may run, or the questions were answered.
    pub allow: bool,
    /// When not allowed: the tool result the model gets, saying why.
    pub refusal: String,
    /// The input to run the call with instead of the model's.
    pub updated_input: Option<Value>,
    /// The answers to the questions, by question text.
    pub answers: Option<serde_json::Map<String, Value>>,
}

#[async_trait]
pub trait Person: Send + Sync {
    /// Asks, and waits for an answer (or a reason to stop waiting).
    async fn ask(&self, ask: Ask<'_>) -> Answer;

    /// Allow rules the person gave for the rest of the session.
    fn remembered(&self) -> Vec<Rule>;
}
