//! The OpenAPI schemas of `/api/v1/chat/stream`'s frames: one schema per
//! frame `type`, gathered in `StreamFrame`, a `oneOf` discriminated on `type`.
//!
//! The frames themselves are built by `agent::events::render`; a test there checks each
//! frame it makes against these schemas.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, Discriminator, ObjectBuilder, OneOfBuilder, Schema, SchemaType,
    Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::agent::approvals::PermissionRecord;
use crate::agent::context::Compaction;
use crate::agent::turn::ToolCall;
use crate::store::{Todo, UsageTotals};

pub use crate::agent::events::REFERENCE_KEYS;

/// One `data:` line of the stream.
pub struct StreamFrame;

/// Frame types a subagent's run produces inside the parent's stream.
const NESTED_FRAMES: [&str; 5] = [
    "text_delta",
    "thinking_delta",
    "tool_use",
    "tool_result",
    "todos",
];

/// A property: its name, its schema and whether every frame has it.
type Property = (&'static str, RefOr<Schema>, bool);

/// Each frame type: its `type`, its schema's name, what it means and its
/// own properties (the reference keys it does not use are added as `null`).
fn frame_types() -> Vec<(&'static str, &'static str, &'static str, Vec<Property>)> {
    let mut types = vec![
        (
            "text_delta",
            "TextDeltaFrame",
            "Text of the answer as the model writes it; the deltas of a turn, joined, are its text.",
            vec![("text", string("A piece of the answer.", "Hello"), true)],
        ),
        (
            "thinking_delta",
            "ThinkingDeltaFrame",
            "Extended thinking as the model writes it (only with defaults.thinking_budget_tokens).",
            vec![(
                "thinking",
                string("A piece of the model's thinking.", "Let me look"),
                true,
            )],
        ),
        (
            "tool_use",
            "ToolUseFrame",
            "The model decided a tool call; it runs next.",
            vec![
                ("tool_use_id", string("The call's id.", "toolu_01A"), true),
                ("tool_name", string("The tool.", "Bash"), true),
                ("tool_input", object("The tool's input."), true),
                ("tool", string("The same as tool_name.", "Bash"), true),
                ("input", object("The same as tool_input."), true),
            ],
        ),
        (
            "tool_result",
            "ToolResultFrame",
            "A tool call ran (or was refused); what goes back to the model.",
            vec![
                ("tool_use_id", string("The call's id.", "toolu_01A"), true),
                ("tool_name", string("The tool.", "Bash"), true),
                ("tool", string("The same as tool_name.", "Bash"), true),
                (
                    "content",
                    string("The tool's result, as the model gets it.", "hello.py"),
                    true,
                ),
                (
                    "is_error",
                    typed(Type::Boolean, "Whether the call failed or was refused."),
                    true,
                ),
            ],
        ),
        (
            "todos",
            "TodosFrame",
            "TodoWrite changed the session's todo list: the whole list, in order.",
            vec![(
                "todos",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(Todo::name()))
                    .into(),
                true,
            )],
        ),
        (
            "permission_request",
            "PermissionRequestFrame",
            "The turn waits for a person to approve this call: answer with POST /api/v1/sessions/{session_id}/permissions/{request_id}, from any connection or instance. Unanswered after defaults.permission_timeout_secs the call is denied.",
            vec![
                (
                    "request_id",
                    string(
                        "The request's id, to answer it with.",
                        "0b9e4f0a-5d2c-4a8e-9d7f-1c2b3a4d5e6f",
                    ),
                    true,
                ),
                ("tool_use_id", string("The call's id.", "toolu_01A"), true),
                ("tool_name", string("The tool.", "Bash"), true),
                ("tool_input", object("The input the call would run with."), true),
                (
                    "reason",
                    string(
                        "Why the call needs a person.",
                        "the permission mode is default and no allow rule covers `rm -rf build`",
                    ),
                    true,
                ),
            ],
        ),
        (
            "question",
            "QuestionFrame",
            "The model asks the person questions (AskUserQuestion) and waits: answer with POST /api/v1/sessions/{session_id}/questions/{request_id}.",
            vec![
                (
                    "request_id",
                    string(
                        "The request's id, to answer it with.",
                        "0b9e4f0a-5d2c-4a8e-9d7f-1c2b3a4d5e6f",
                    ),
                    true,
                ),
                ("tool_use_id", string("The call's id.", "toolu_01A"), true),
                ("tool_name", string("Always AskUserQuestion.", "AskUserQuestion"), true),
                ("tool_input", object("The tool's whole input."), true),
                (
                    "questions",
                    ArrayBuilder::new()
                        .items(object(
                            "{question, header, options: [{label, description, preview?}], multiSelect}",
                        ))
                        .into(),
                    true,
                ),
            ],
        ),
        (
            "compaction",
            "CompactionFrame",
            "The conversation was compacted (or cleared) before the next model call; the other fields are those of Compaction.",
            vec![],
        ),
        (
            "done",
            "DoneFrame",
            "The turn ended; always the last frame on success. The same fields as the chat response.",
            vec![
                (
                    "text",
                    string("Text of the final assistant message.", "Listed your files."),
                    true,
                ),
                (
                    "stop_reason",
                    string(
                        "end_turn, max_tokens, max_turns, max_budget, interrupted, compacted or cleared.",
                        "end_turn",
                    ),
                    true,
                ),
                (
                    "num_turns",
                    typed(Type::Integer, "Model calls made in this turn."),
                    true,
                ),
                (
                    "usage",
                    Ref::from_schema_name(UsageTotals::name()).into(),
                    true,
                ),
                (
                    "cost_usd",
                    typed(Type::Number, "US dollars, rounded to micro-dollars."),
                    true,
                ),
                (
                    "duration_ms",
                    typed(Type::Integer, "Length of the turn."),
                    true,
                ),
                (
                    "tool_calls",
                    ArrayBuilder::new()
                        .items(Ref::from_schema_name(ToolCall::name()))
                        .into(),
                    true,
                ),
                (
                    "model",
                    string(
                        "The model that made the turn's last call.",
                        "claude-sonnet-4-6",
                    ),
                    true,
                ),
                (
                    "fallback_model_used",
                    typed(
                        Type::Boolean,
                        "Whether the turn continued on defaults.fallback_model.",
                    ),
                    true,
                ),
                (
                    "compactions",
                    ArrayBuilder::new()
                        .items(Ref::from_schema_name(Compaction::name()))
                        .into(),
                    true,
                ),
                (
                    "permission_requests",
                    ArrayBuilder::new()
                        .items(Ref::from_schema_name(PermissionRecord::name()))
                        .into(),
                    true,
                ),
            ],
        ),
        (
            "error",
            "ErrorFrame",
            "The turn failed; always the last frame on failure.",
            vec![
                (
                    "error",
                    string(
                        "What went wrong, in a sentence a person can act on.",
                        "The turn ran past its timeout of 120 s.",
                    ),
                    true,
                ),
                (
                    "code",
                    string(
                        "The error code an HTTP error would carry (turn_timeout, upstream_error, shutting_down, internal, ...).",
                        "turn_timeout",
                    ),
                    true,
                ),
            ],
        ),
    ];
    // A subagent's frames are the same frames, marked with the call that
    // started it.
    for (kind, _, _, properties) in &mut types {
        if NESTED_FRAMES.contains(kind) {
            properties.push((
                "parent_tool_use_id",
                string(
                    "Only on a subagent's frames: the id of the parent's Agent call that runs it.",
                    "toolu_01A",
                ),
                false,
            ));
        }
    }
    types
}

fn typed(kind: Type, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(kind))
        .description(Some(description))
        .into()
}

fn string(description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .examples([example])
        .into()
}

fn object(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some(description))
        .into()
}

fn null() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Null))
        .description(Some("Unused by this frame type; always null."))
        .into()
}

/// The schema of one frame type.
fn frame_schema(kind: &str, description: &str, properties: Vec<Property>) -> RefOr<Schema> {
    let mut own = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some([kind])),
        )
        .required("type");
    for key in REFERENCE_KEYS.iter().skip(1) {
        if !properties.iter().any(|(name, _, _)| name == key) {
            own = own.property(*key, null()).required(*key);
        }
    }
    for (name, schema, required) in properties {
        own = own.property(name, schema);
        if required {
            own = own.required(name);
        }
    }
    if kind == "compaction" {
        return AllOfBuilder::new()
            .item(Ref::from_schema_name(Compaction::name()))
            .item(own)
            .description(Some(description))
            .into();
    }
    own.description(Some(description)).into()
}

impl PartialSchema for StreamFrame {
    fn schema() -> RefOr<Schema> {
        let types = frame_types();
        let mapping = types
            .iter()
            .map(|(kind, name, _, _)| (*kind, format!("#/components/schemas/{name}")));
        let mut one_of = OneOfBuilder::new()
            .description(Some(
                "One `data:` line of /api/v1/chat/stream, a JSON object whose `type` says \
                 which. Every frame carries the reference service's keys `type`, `text`, \
                 `tool_name`, `tool_input` and `error`, null where unused. Frames are numbered \
                 with SSE `id:`; a keep-alive comment comes every 15 s while a tool runs; \
                 exactly one `done` or `error` ends the stream.",
            ))
            .discriminator(Some(Discriminator::with_mapping("type", mapping)));
        for (_, name, _, _) in &types {
            one_of = one_of.item(Ref::from_schema_name(*name));
        }
        one_of.into()
    }
}

impl ToSchema for StreamFrame {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("StreamFrame")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (kind, name, description, properties) in frame_types() {
            schemas.push((name.to_owned(), frame_schema(kind, description, properties)));
        }
        schemas.push((UsageTotals::name().into_owned(), UsageTotals::schema()));
        schemas.push((ToolCall::name().into_owned(), ToolCall::schema()));
        schemas.push((Compaction::name().into_owned(), Compaction::schema()));
        <Compaction as ToSchema>::schemas(schemas);
        schemas.push((
            PermissionRecord::name().into_owned(),
            PermissionRecord::schema(),
        ));
        <PermissionRecord as ToSchema>::schemas(schemas);
        schemas.push((Todo::name().into_owned(), Todo::schema()));
        <Todo as ToSchema>::schemas(schemas);
    }
}
