//! Per-session options: what a client may choose for one session (model,
//! system prompt, permission mode, tools, limits) and how they shape its turns.
//!
//! A session's options may only tighten what the service's `defaults`
//! allow; `api.session_overrides` says which of them clients may set at all.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{Settings, SystemPromptConfig};
use crate::error::ApiError;
use crate::permissions::Behavior;
use crate::permissions::{Rule, RuleSource};
use crate::tools::PermissionMode;

/// Every key `api.session_overrides` may list. `system_prompt` lets a
/// session replace the whole prompt; `system_prompt.append` only add to it.
pub const OVERRIDE_KEYS: [&str; 9] = [
    "model",
    "system_prompt",
    "system_prompt.append",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "max_budget_usd",
    "thinking_budget_tokens",
];

/// What clients may set unless the operator says otherwise: everything but
/// replacing the system prompt (which would drop the service's own rules).
pub const DEFAULT_OVERRIDES: [&str; 8] = [
    "model",
    "system_prompt.append",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "max_budget_usd",
    "thinking_budget_tokens",
];

/// The option fields of a request body, as `PATCH` accepts them.
pub const FIELDS: [&str; 8] = [
    "model",
    "system_prompt",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "max_budget_usd",
    "thinking_budget_tokens",
];

/// Characters a session's system prompt text may have.
const MAX_PROMPT_CHARS: usize = 100_000;
/// Entries a tool list may have.
const MAX_TOOL_RULES: usize = 200;

/// A session's system prompt: a replacement, or text added to the
/// service's prompt (`{"append": "..."}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SessionPrompt {
    /// Replaces the whole system prompt.
    Replace(String),
    /// Added after the service's system prompt.
    Append { append: String },
}

/// Options a session was created (or patched) with; unset ones follow the
/// service's `defaults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionOptions {
    /// The model every turn calls, e.g. `claude-haiku-4-5`: one the service
    /// knows (its `models` or `pricing` tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "claude-haiku-4-5")]
    pub model: Option<String>,
    /// A string replaces the system prompt; `{"append": "..."}` adds to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<SessionPrompt>,
    /// At most as permissive as the service's `defaults.permission_mode`
    /// (plan < default = dontAsk < acceptEdits < bypassPermissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "plan")]
    pub permission_mode: Option<PermissionMode>,
    /// Only the tools these name are offered (rule syntax, e.g. `Read`,
    /// `Bash(git:*)` offers Bash). They narrow the offer; they approve nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// Deny rules added to the service's (`Bash` hides Bash; `Bash(rm:*)`
    /// refuses those calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    /// Model calls per turn, from 1 to `defaults.max_turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Dollars the session may spend, above 0 and at most
    /// `defaults.max_budget_usd` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Extended thinking per call: 0 (off) or from 1024 up to
    /// `defaults.thinking_budget_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget_tokens: Option<u32>,
}

impl SessionOptions {
    /// The options as a JSON object holding only the set ones.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// Options read back from the store; anything unreadable is corrupt data.
    pub fn from_json(value: Value) -> Result<Self, String> {
        if value.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(value).map_err(|e| format!("stored session options: {e}"))
    }

    /// These options with `changes` applied: a field set to `null` returns
    /// to the service's default. Returns the fields that changed.
    pub fn patched(&self, changes: &Map<String, Value>) -> Result<(Self, Vec<String>), ApiError> {
        let mut merged = match self.to_json() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut changed = Vec::new();
        for (key, value) in changes {
            if !FIELDS.contains(&key.as_str()) {
                continue;
            }
            changed.push(key.clone());
            if value.is_null() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        let options = serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
            let field = e.path().to_string();
            ApiError::validation(&field, e.into_inner().to_string())
        })?;
        Ok((options, changed))
    }

    /// Checks the options against what the service allows: a key not in
    /// `api.session_overrides` is 403, a value looser than the defaults 422.
    /// With `only`, just those fields are checked (the ones a PATCH changes).
    pub fn check(&self, settings: &Settings, only: Option<&[String]>) -> Result<(), ApiError> {
        let wanted = |field: &str| only.is_none_or(|fields| fields.iter().any(|f| f == field));
        let allowed = |key: &str| settings.api.session_overrides.iter().any(|k| k == key);
        let permit = |key: &str, field: &str| -> Result<(), ApiError> {
            if allowed(key) {
                return Ok(());
            }
            Err(ApiError::Forbidden(format!(
                "{field} cannot be set per session on this service: api.session_overrides does not list '{key}' (it allows: {}).",
                if settings.api.session_overrides.is_empty() {
                    "nothing".to_owned()
                } else {
                    settings.api.session_overrides.join(", ")
                }
            )))
        };

        if wanted("model")
            && let Some(model) = &self.model
        {
            permit("model", "model")?;
            check_model(settings, model)?;
        }
        if wanted("system_prompt")
            && let Some(prompt) = &self.system_prompt
        {
            let text = match prompt {
                SessionPrompt::Replace(text) => {
                    permit("system_prompt", "system_prompt")?;
                    text
                }
                SessionPrompt::Append { append } => {
                    if !allowed("system_prompt") {
                        permit("system_prompt.append", "system_prompt.append")?;
                    }
                    append
                }
            };
            if text.trim().is_empty() {
                return Err(ApiError::validation("system_prompt", "must not be blank"));
            }
            if text.chars().count() > MAX_PROMPT_CHARS {
                return Err(ApiError::validation(
                    "system_prompt",
                    format!("must be at most {MAX_PROMPT_CHARS} characters"),
                ));
            }
        }
        if wanted("permission_mode")
            && let Some(mode) = self.permission_mode
        {
            permit("permission_mode", "permission_mode")?;
            let configured = configured_mode(settings);
            if mode.rank() > configured.rank() {
                return Err(ApiError::validation(
                    "permission_mode",
                    format!(
                        "may only be as permissive as the service's mode '{configured}': choose a lower one (plan < default = dontAsk < acceptEdits < bypassPermissions)"
                    ),
                ));
            }
        }
        for (field, list, behavior) in [
            ("allowed_tools", &self.allowed_tools, Behavior::Allow),
            ("disallowed_tools", &self.disallowed_tools, Behavior::Deny),
        ] {
            if wanted(field)
                && let Some(list) = list
            {
                permit(field, field)?;
                check_rules(field, list, behavior)?;
            }
        }
        if wanted("max_turns")
            && let Some(turns) = self.max_turns
        {
            permit("max_turns", "max_turns")?;
            let limit = settings.defaults.max_turns;
            if turns == 0 || turns > limit {
                return Err(ApiError::validation(
                    "max_turns",
                    format!("must be from 1 to {limit} (the service's defaults.max_turns)"),
                ));
            }
        }
        if wanted("max_budget_usd")
            && let Some(budget) = self.max_budget_usd
        {
            permit("max_budget_usd", "max_budget_usd")?;
            if !(budget.is_finite() && budget > 0.0) {
                return Err(ApiError::validation(
                    "max_budget_usd",
                    "must be a positive number of dollars",
                ));
            }
            if let Some(limit) = settings.defaults.max_budget_usd
                && budget > limit
            {
                return Err(ApiError::validation(
                    "max_budget_usd",
                    format!("must be at most {limit} (the service's defaults.max_budget_usd)"),
                ));
            }
        }
        if wanted("thinking_budget_tokens")
            && let Some(budget) = self.thinking_budget_tokens
        {
            permit("thinking_budget_tokens", "thinking_budget_tokens")?;
            let limit = settings.defaults.thinking_budget_tokens;
            if budget > limit {
                return Err(ApiError::validation(
                    "thinking_budget_tokens",
                    format!(
                        "must be at most {limit} (the service's defaults.thinking_budget_tokens)"
                    ),
                ));
            }
            if budget > 0 && budget < 1_024 {
                return Err(ApiError::validation(
                    "thinking_budget_tokens",
                    "must be 0 (off) or at least 1024",
                ));
            }
        }
        Ok(())
    }

    /// The session's spend limit: its own, never above the service's.
    pub fn max_budget_usd(&self, settings: &Settings) -> Option<f64> {
        let service = settings.defaults.max_budget_usd;
        match self.max_budget_usd {
            Some(budget) => Some(service.map_or(budget, |limit| budget.min(limit))),
            None => service,
        }
    }

    /// The settings a turn of this session runs with: the service's, with
    /// these options in place of the defaults they override.
    pub fn apply(&self, settings: &Settings) -> Settings {
        let mut effective = settings.clone();
        let defaults = &mut effective.defaults;
        if let Some(model) = &self.model {
            defaults.model = model.clone();
        }
        match &self.system_prompt {
            None => {}
            Some(SessionPrompt::Replace(text)) => {
                defaults.system_prompt = Some(SystemPromptConfig::Replace(text.clone()));
            }
            Some(SessionPrompt::Append { append }) => {
                defaults.system_prompt = Some(match defaults.system_prompt.take() {
                    None | Some(SystemPromptConfig::Preset { append: None }) => {
                        SystemPromptConfig::Preset {
                            append: Some(append.clone()),
                        }
                    }
                    Some(SystemPromptConfig::Preset {
                        append: Some(service),
                    }) => SystemPromptConfig::Preset {
                        append: Some(format!("{service}\n\n{append}")),
                    },
                    Some(SystemPromptConfig::Replace(service)) => {
                        SystemPromptConfig::Replace(format!("{service}\n\n{append}"))
                    }
                });
            }
        }
        if let Some(turns) = self.max_turns {
            defaults.max_turns = turns.min(settings.defaults.max_turns);
        }
        defaults.max_budget_usd = self.max_budget_usd(settings);
        if let Some(budget) = self.thinking_budget_tokens {
            let max_tokens = effective.max_tokens_for(&effective.defaults.model);
            // Thinking must leave room for the answer within max_tokens.
            effective.defaults.thinking_budget_tokens = if budget >= max_tokens {
                0
            } else {
                budget.min(settings.defaults.thinking_budget_tokens)
            };
        }
        effective
    }
}

/// The service's permission mode (validated at start-up).
fn configured_mode(settings: &Settings) -> PermissionMode {
    settings
        .defaults
        .permission_mode
        .parse()
        .unwrap_or(PermissionMode::Plan)
}

/// A model the service has limits or prices for.
fn check_model(settings: &Settings, model: &str) -> Result<(), ApiError> {
    let well_formed = !model.is_empty()
        && model.len() <= 200
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '/'));
    if !well_formed {
        return Err(ApiError::validation(
            "model",
            "must be a model id such as claude-sonnet-4-6",
        ));
    }
    let known = |prefix: &String| model.starts_with(prefix.as_str());
    if settings.models.keys().any(known) || settings.pricing.keys().any(known) {
        return Ok(());
    }
    Err(ApiError::validation(
        "model",
        format!(
            "'{model}' is not a model this service knows (its models and pricing tables); use e.g. {}",
            settings.defaults.model
        ),
    ))
}

/// A tool list of usable rules.
fn check_rules(field: &str, list: &[String], behavior: Behavior) -> Result<(), ApiError> {
    if list.len() > MAX_TOOL_RULES {
        return Err(ApiError::validation(
            field,
            format!("must have at most {MAX_TOOL_RULES} entries"),
        ));
    }
    for text in list {
        Rule::parse(text, RuleSource::Session(behavior))
            .map_err(|e| ApiError::validation(field, e.problem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(value: Value) -> SessionOptions {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_default_overrides_allow_tightening_and_refuse_loosening() {
        let mut settings = Settings::default();
        settings.defaults.permission_mode = "acceptEdits".into();
        settings.defaults.max_turns = 20;
        let ok = options(json!({
            "model": "claude-haiku-4-5", "system_prompt": {"append": "Be brief."},
            "permission_mode": "plan", "allowed_tools": ["Read", "Bash(git:*)"],
            "disallowed_tools": ["WebFetch"], "max_turns": 5, "max_budget_usd": 0.5,
            "thinking_budget_tokens": 0
        }));
        ok.check(&settings, None).unwrap();

        let replace = options(json!({"system_prompt": "You are a pirate."}));
        let err = replace.check(&settings, None).unwrap_err();
        assert_eq!(err.code(), "forbidden");
        assert!(err.detail().contains("'system_prompt'"), "{}", err.detail());

        for (body, field) in [
            (
                json!({"permission_mode": "bypassPermissions"}),
                "permission_mode",
            ),
            (json!({"max_turns": 21}), "max_turns"),
            (json!({"max_turns": 0}), "max_turns"),
            (json!({"max_budget_usd": -1.0}), "max_budget_usd"),
            (
                json!({"thinking_budget_tokens": 2048}),
                "thinking_budget_tokens",
            ),
            (json!({"model": "gpt-4o"}), "model"),
            (json!({"disallowed_tools": ["Bash("]}), "disallowed_tools"),
            (json!({"system_prompt": {"append": "  "}}), "system_prompt"),
        ] {
            let err = options(body.clone()).check(&settings, None).unwrap_err();
            assert_eq!(err.code(), "validation_failed", "{body}");
            assert!(err.detail().starts_with(field), "{body}: {}", err.detail());
        }

        settings.api.session_overrides = vec!["model".into()];
        let err = options(json!({"max_turns": 3}))
            .check(&settings, None)
            .unwrap_err();
        assert_eq!(err.code(), "forbidden");
        // A PATCH that changes only the model is not held to the other keys.
        let both = options(json!({"model": "claude-haiku-4-5", "max_turns": 3}));
        both.check(&settings, Some(&["model".to_owned()])).unwrap();
    }

    #[test]
    fn applied_options_replace_the_defaults_they_name_and_no_more() {
        let mut settings = Settings::default();
        settings.defaults.max_turns = 10;
        settings.defaults.system_prompt = Some(SystemPromptConfig::Preset {
            append: Some("Service rules.".into()),
        });
        let session = options(json!({
            "model": "claude-haiku-4-5", "system_prompt": {"append": "Session rules."},
            "max_turns": 99
        }));
        let effective = session.apply(&settings);
        assert_eq!(effective.defaults.model, "claude-haiku-4-5");
        assert_eq!(effective.defaults.max_turns, 10);
        assert_eq!(
            effective.defaults.system_prompt,
            Some(SystemPromptConfig::Preset {
                append: Some("Service rules.\n\nSession rules.".into())
            })
        );
        assert_eq!(
            SessionOptions::default().apply(&settings).defaults.model,
            settings.defaults.model
        );
    }

    #[test]
    fn a_patch_sets_clears_and_names_what_it_changed() {
        let before = options(json!({"model": "claude-haiku-4-5", "max_turns": 3}));
        let changes = json!({"model": null, "max_turns": 4, "metadata": {"a": 1}});
        let (after, changed) = before.patched(changes.as_object().unwrap()).unwrap();
        assert_eq!(after, options(json!({"max_turns": 4})));
        assert_eq!(changed, ["model", "max_turns"]);
        let bad = json!({"max_turns": "many"});
        let err = before.patched(bad.as_object().unwrap()).unwrap_err();
        assert!(err.detail().starts_with("max_turns"), "{}", err.detail());
        assert_eq!(SessionOptions::from_json(after.to_json()).unwrap(), after);
    }
}
