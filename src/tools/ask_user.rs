//! `AskUserQuestion`: the model asks the person behind the session one to
//! four multiple-choice questions and waits for the answers, which come back
//! in Claude Code's words.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::person::Ask;
use super::{Tool, ToolContext, ToolOutput};
use crate::permissions::ASK_USER_QUESTION;
use crate::store::RequestKind;

/// Most characters of a question's `header` (its chip).
pub const MAX_HEADER_CHARS: usize = 12;

pub struct AskUserQuestionTool;

#[async_trait]
impl Tool for AskUserQuestionTool {
    fn name(&self) -> &str {
        ASK_USER_QUESTION
    }

    fn description(&self) -> String {
        "Asks the user one to four multiple-choice questions and waits for the answers. Use it \
         to gather preferences, clarify an ambiguous instruction or let the user choose between \
         approaches while you work. Each question has a short header (a chip of at most 12 \
         characters), two to four options with a label and a description, and multiSelect when \
         several options may be chosen. The user can always answer something else than the \
         options offered."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "description": "Questions to ask the user (1-4 questions)",
                    "minItems": 1,
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {
                            "question": {"type": "string", "description": "The complete question, ending with a question mark"},
                            "header": {"type": "string", "description": "A very short label shown as a chip (at most 12 characters)"},
                            "options": {
                                "type": "array",
                                "minItems": 2,
                                "maxItems": 4,
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "label": {"type": "string", "description": "The option as the user sees and picks it"},
                                        "description": {"type": "string", "description": "What the option means or implies"},
                                        "preview": {"type": "string", "description": "Optional content to show beside the option"}
                                    },
                                    "required": ["label", "description"],
                                    "additionalProperties": false
                                }
                            },
                            "multiSelect": {"type": "boolean", "description": "Whether several options may be chosen"}
                        },
                        "required": ["question", "header", "options", "multiSelect"],
                        "additionalProperties": false
                    }
                },
                "answers": {"type": "object", "description": "Filled in with the user's answers", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "object"}},
                "metadata": {"type": "object", "properties": {"source": {"type": "string"}}}
            },
            "required": ["questions"],
            "additionalProperties": false
        })
    }

    /// Asking changes nothing: questions may be asked in every mode that
    /// has a person to ask, plan mode included.
    fn read_only(&self) -> bool {
        true
    }

    /// The person answers one set of questions at a time.
    fn runs_alongside(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let questions = match questions(&input) {
            Ok(questions) => questions,
            Err(why) => return ToolOutput::error(format!("Invalid input: {why}")),
        };
        let Some(person) = &ctx.person else {
            return ToolOutput::error(
                "Nobody can be asked in this session, so the questions were not asked. Decide \
                 on your own, or say in your answer what you need to know.",
            );
        };
        let answer = person
            .ask(Ask {
                kind: RequestKind::Question,
                tool_use_id: &ctx.call_id,
                tool_name: ASK_USER_QUESTION,
                tool_input: &input,
                reason: "",
                refusal: "",
            })
            .await;
        if !answer.allow {
            return ToolOutput::error(answer.refusal);
        }
        let answers = answer.answers.unwrap_or_default();
        let pairs: Vec<String> = questions
            .iter()
            .filter_map(|q| {
                let given = answers.get(*q)?;
                let text = given
                    .as_str()
                    .map_or_else(|| given.to_string(), str::to_owned);
                Some(format!("\"{q}\"=\"{text}\""))
            })
            .collect();
        ToolOutput::ok(format!(
            "User has answered your questions: {}. You can now continue with the user's answers in mind.",
            pairs.join(", ")
        ))
    }
}

/// The question texts of a valid input, in order; otherwise what is wrong.
pub fn questions(input: &Value) -> Result<Vec<&str>, String> {
    let list = input
        .get("questions")
        .and_then(Value::as_array)
        .ok_or("`questions` must be an array of 1 to 4 questions")?;
    if list.is_empty() || list.len() > 4 {
        return Err(format!(
            "`questions` holds {} questions; ask 1 to 4",
            list.len()
        ));
    }
    let mut texts = Vec::with_capacity(list.len());
    for (n, q) in list.iter().enumerate() {
        let text = q
            .get("question")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or(format!(
                "questions[{n}].question must be a non-empty string"
            ))?;
        if texts.contains(&text) {
            return Err(format!("questions[{n}] repeats the question {text:?}"));
        }
        let header = q
            .get("header")
            .and_then(Value::as_str)
            .ok_or(format!("questions[{n}].header must be a string"))?;
        if header.chars().count() > MAX_HEADER_CHARS {
            return Err(format!(
                "questions[{n}].header must be at most {MAX_HEADER_CHARS} characters"
            ));
        }
        if !q.get("multiSelect").is_some_and(Value::is_boolean) {
            return Err(format!("questions[{n}].multiSelect must be true or false"));
        }
        let options = q
            .get("options")
            .and_then(Value::as_array)
            .filter(|o| (2..=4).contains(&o.len()))
            .ok_or(format!("questions[{n}].options must hold 2 to 4 options"))?;
        for (m, option) in options.iter().enumerate() {
            let labelled = option.get("label").and_then(Value::as_str).is_some()
                && option.get("description").and_then(Value::as_str).is_some();
            if !labelled {
                return Err(format!(
                    "questions[{n}].options[{m}] needs a label and a description (strings)"
                ));
            }
        }
        texts.push(text);
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(text: &str) -> Value {
        json!({"question": text, "header": "Lang", "multiSelect": false,
               "options": [{"label": "Rust", "description": "fast"},
                           {"label": "Go", "description": "simple"}]})
    }

    #[test]
    fn questions_are_checked_as_claude_code_shapes_them() {
        let good = json!({"questions": [question("Which language?")]});
        assert_eq!(questions(&good).unwrap(), ["Which language?"]);
        assert!(questions(&json!({"questions": []})).is_err());
        let repeated = json!({"questions": [question("Same?"), question("Same?")]});
        assert!(questions(&repeated).is_err());
        let mut long = question("Q?");
        long["header"] = json!("far too long a header");
        assert!(questions(&json!({"questions": [long]})).is_err());
        let mut one_option = question("Q?");
        one_option["options"] = json!([{"label": "only", "description": "x"}]);
        assert!(questions(&json!({"questions": [one_option]})).is_err());
    }
}
