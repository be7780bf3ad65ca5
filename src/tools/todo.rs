//! `TodoWrite`: the model's plan for the task, a list the user can watch.
//! Each call replaces the whole list, stores it with the session and sends
//! it to the client as a `todos` frame.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::args::InvalidInput;
use super::{Tool, ToolContext, ToolEvent, ToolOutput};
use crate::store::{DynStore, StoreError, Todo, TodoStatus};

/// Most items one list may hold.
pub const MAX_TODOS: usize = 100;
/// Most characters of an item's `content` or `activeForm`.
pub const MAX_TODO_CHARS: usize = 1_000;

/// Keeps each session's list in `store`.
pub struct TodoWriteTool {
    store: DynStore,
}

impl TodoWriteTool {
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Tool for TodoWriteTool {
    fn name(&self) -> &str {
        "TodoWrite"
    }

    fn description(&self) -> String {
        format!(
            "Sets the todo list of this session: a plan of the current task that the user sees \
             as it changes. Use it for work of three steps or more, or when the user lists \
             several things to do; skip it for a single quick step. Each call replaces the \
             whole list, so send every item each time. An item has content (the task in the \
             imperative, \"Run the tests\"), activeForm (the same while it is being done, \
             \"Running the tests\") and status: pending, in_progress or completed. Keep exactly \
             one item in_progress while working, mark an item completed as soon as it is done \
             (not in batches), and add items found along the way. At most {MAX_TODOS} items of \
             at most {MAX_TODO_CHARS} characters each."
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "todos": {
                    "type": "array",
                    "description": "The whole updated todo list",
                    "maxItems": MAX_TODOS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "content": {"type": "string", "minLength": 1, "maxLength": MAX_TODO_CHARS},
                            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                            "activeForm": {"type": "string", "minLength": 1, "maxLength": MAX_TODO_CHARS}
                        },
                        "required": ["content", "status", "activeForm"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["todos"],
            "additionalProperties": false
        })
    }

    /// It changes no file and runs nothing: planning is allowed in every
    /// permission mode, plan mode included.
    fn read_only(&self) -> bool {
        true
    }

    /// Two lists written at once would race for the session's one list.
    fn runs_alongside(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let todos = match parse(&input) {
            Ok(todos) => todos,
            Err(e) => return e.into(),
        };
        match self.store.set_todos(ctx.session.id(), &todos).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return ToolOutput::error(
                    "This session no longer exists, so its todo list cannot be kept.",
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not store the todo list");
                return ToolOutput::error(
                    "The todo list could not be saved (the session store is unavailable); it \
                     is unchanged. Try again later.",
                );
            }
        }
        let summary = summary(&todos);
        ctx.events.emit(ToolEvent::Todos(todos));
        ToolOutput::ok(summary)
    }
}

/// The list as the model sent it, or what is wrong with it (naming the item).
fn parse(input: &Value) -> Result<Vec<Todo>, InvalidInput> {
    let Some(items) = input.get("todos") else {
        return Err(InvalidInput(
            "missing required field `todos` (an array of {content, status, activeForm})".into(),
        ));
    };
    let Some(items) = items.as_array() else {
        return Err(InvalidInput(
            "field `todos` must be an array of {content, status, activeForm}".into(),
        ));
    };
    if items.len() > MAX_TODOS {
        return Err(InvalidInput(format!(
            "the list has {} items; at most {MAX_TODOS} are kept. Merge or drop some.",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_item(i, item))
        .collect()
}

fn parse_item(i: usize, item: &Value) -> Result<Todo, InvalidInput> {
    let at = |what: String| InvalidInput(format!("todos[{i}]: {what}"));
    let Some(item) = item.as_object() else {
        return Err(at("must be an object {content, status, activeForm}".into()));
    };
    let text = |key: &str| -> Result<String, InvalidInput> {
        let Some(value) = item.get(key).and_then(Value::as_str) else {
            return Err(at(format!("missing `{key}` (a string)")));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(at(format!("`{key}` must not be empty")));
        }
        if value.chars().count() > MAX_TODO_CHARS {
            return Err(at(format!(
                "`{key}` is longer than {MAX_TODO_CHARS} characters"
            )));
        }
        Ok(value.to_owned())
    };
    let content = text("content")?;
    let active_form = text("activeForm")?;
    let status = match item.get("status").and_then(Value::as_str) {
        Some("pending") => TodoStatus::Pending,
        Some("in_progress") => TodoStatus::InProgress,
        Some("completed") => TodoStatus::Completed,
        Some(other) => {
            return Err(at(format!(
                "`status` must be \"pending\", \"in_progress\" or \"completed\", got \"{other}\""
            )));
        }
        None => {
            return Err(at(
                "missing `status` (\"pending\", \"in_progress\" or \"completed\")".into(),
            ));
        }
    };
    Ok(Todo {
        content,
        status,
        active_form,
    })
}

fn summary(todos: &[Todo]) -> String {
    if todos.is_empty() {
        return "The todo list is now empty.".to_owned();
    }
    let count = |status: TodoStatus| todos.iter().filter(|t| t.status == status).count();
    let mut text = format!(
        "Todo list saved: {} pending, {} in progress, {} completed.",
        count(TodoStatus::Pending),
        count(TodoStatus::InProgress),
        count(TodoStatus::Completed)
    );
    if let Some(current) = todos.iter().find(|t| t.status == TodoStatus::InProgress) {
        text.push_str(&format!(" Now: {}.", current.active_form));
    }
    text.push_str(" Keep it up to date as you work.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_list_parses_with_claude_codes_field_names() {
        let todos = parse(&json!({"todos": [
            {"content": "Run tests", "status": "in_progress", "activeForm": "Running tests"},
            {"content": " Fix it ", "status": "pending", "activeForm": "Fixing it", "id": "2"}
        ]}))
        .unwrap();
        assert_eq!(todos[0].status, TodoStatus::InProgress);
        assert_eq!(todos[1].content, "Fix it");
        assert_eq!(
            serde_json::to_value(&todos[0]).unwrap(),
            json!({"content": "Run tests", "status": "in_progress", "activeForm": "Running tests"})
        );
        assert!(parse(&json!({"todos": []})).unwrap().is_empty());
    }

    #[test]
    fn bad_lists_name_the_item_and_the_problem() {
        let cases = [
            (json!({}), "`todos`"),
            (json!({"todos": "x"}), "must be an array"),
            (
                json!({"todos": [{"content": "a", "status": "done", "activeForm": "b"}]}),
                "todos[0]: `status` must be",
            ),
            (
                json!({"todos": [{"content": "a", "status": "pending", "activeForm": "b"}, {"content": "  ", "status": "pending", "activeForm": "b"}]}),
                "todos[1]: `content` must not be empty",
            ),
            (
                json!({"todos": [{"content": "a", "status": "pending"}]}),
                "missing `activeForm`",
            ),
            (
                json!({"todos": [{"content": "x".repeat(MAX_TODO_CHARS + 1), "status": "pending", "activeForm": "b"}]}),
                "longer than",
            ),
            (
                json!({"todos": vec![json!({"content": "a", "status": "pending", "activeForm": "b"}); MAX_TODOS + 1]}),
                "at most 100",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(&input).unwrap_err().0;
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
