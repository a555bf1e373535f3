//! Chat templates: the Jinja template a model ships in `tokenizer_config.json` (or, since
//! transformers 4.43, in `chat_template.jinja`), rendered with minijinja as transformers renders
//! it with Jinja2.
//!
//! transformers gives templates `messages`, `add_generation_prompt`, the special tokens by name
//! (`bos_token`, `eos_token`, …), a `raise_exception(msg)` function and Python string methods
//! (`.strip()`, `.startswith()`, …); minijinja-contrib's pycompat supplies the methods.

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value as Jinja, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One chat message, as OpenAI's and transformers' chat formats both spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Roles a template is rendered for; anything else is refused before rendering (templates
/// differ in what they do with an unknown role, from silently dropping it to raising).
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": …}`.
pub fn token_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// The model directory's template: `chat_template.jinja` if present, otherwise
    /// `chat_template` in `tokenizer_config.json` (a string, or a list of named templates of
    /// which the one named `default` is used), otherwise `fallback` (a GGUF file's
    /// `tokenizer.chat_template`). `None` when the model has none (base models).
    ///
    /// `tokenizer_config` is that file's content (`Null` when absent): the loader reads it once
    /// for the template and the EOS token.
    pub fn from_dir(
        dir: &Path,
        tokenizer_config: &Value,
        fallback: Option<String>,
    ) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let jinja_path = dir.join("chat_template.jinja");
        let (source, path) = match std::fs::read_to_string(&jinja_path) {
            Ok(s) => (Some(s), jinja_path),
            Err(_) => match tokenizer_config.get("chat_template") {
                Some(Value::String(s)) => (Some(s.clone()), config_path),
                Some(Value::Array(named)) => (
                    named
                        .iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    config_path,
                ),
                _ => (fallback, config_path),
            },
        };
        let Some(source) = source else {
            return Ok(None);
        };
        Self::new(
            source,
            token_text(tokenizer_config.get("bos_token")),
            token_text(tokenizer_config.get("eos_token")),
        )
        .map(Some)
        .map_err(|e| Error::BadFile {
            path,
            message: e.to_string(),
        })
    }

    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> std::result::Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // Jinja2 as transformers configures it: trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source)?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders the conversation; `add_generation_prompt` opens the assistant's turn. An unknown
    /// role, or a template that raises (e.g. "roles must alternate"), is the caller's error.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages: must not be empty".into()));
        }
        if let Some((i, m)) = messages
            .iter()
            .enumerate()
            .find(|(_, m)| !ROLES.contains(&m.role.as_str()))
        {
            return Err(Error::InvalidInput(format!(
                "messages[{i}].role: unknown role {:?} (one of {})",
                m.role,
                ROLES.join(", ")
            )));
        }
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Inference(e.to_string()))?;
        template
            .render(context! {
                messages => Jinja::from_serialize(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "messages: the model's chat template refused them: {}",
                    e.detail().unwrap_or(&e.to_string())
                ))
            })
    }
}
