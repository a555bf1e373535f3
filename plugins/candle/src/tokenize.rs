//! Tokenization with the model's real sequence limit.
//!
//! `tokenizer.json` files often bake in padding and truncation (all-MiniLM-L6-v2's pads every
//! input to a fixed 128 and cuts there). Both are switched off here: the limit is the one
//! sentence-transformers uses (`max_seq_length`), and batches are padded by the attention
//! layout only as far as each batch's longest input.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// One input, tokenized with special tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Tokens were cut off to fit the model's limit.
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub struct Encoder {
    tokenizer: Tokenizer,
    max_len: usize,
}

impl Encoder {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let bad = |message: String| Error::BadFile {
            path: path.to_owned(),
            message,
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        tokenizer.with_padding(None);
        // Truncating in the tokenizer (rather than cutting ids afterwards) keeps the closing
        // special token, and its overflow list tells us reliably that something was cut.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { tokenizer, max_len })
    }

    /// Longest sequence, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes `text`; without `truncate`, an input over the limit is refused.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded> {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("input is empty".into()));
        }
        self.encode_input(text.into(), truncate)
    }

    /// Tokenizes a (query, text) pair as cross-encoders read it: one sequence with the
    /// tokenizer's pair template (`[CLS] q [SEP] t [SEP]`, type ids 0 then 1 for BERT). Over
    /// the limit, the longer of the two is cut first (transformers' `longest_first`).
    pub fn encode_pair(&self, query: &str, text: &str, truncate: bool) -> Result<Encoded> {
        if query.trim().is_empty() || text.trim().is_empty() {
            return Err(Error::InvalidInput("input is empty".into()));
        }
        self.encode_input((query, text).into(), truncate)
    }

    fn encode_input(&self, input: tokenizers::EncodeInput<'_>, truncate: bool) -> Result<Encoded> {
        // `encode_fast` skips the character offsets, which nothing here reads.
        let enc = self
            .tokenizer
            .encode_fast(input, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let truncated = !enc.get_overflowing().is_empty();
        if truncated && !truncate {
            return Err(Error::InvalidInput(format!(
                "input is longer than the model's limit of {} tokens and truncation is off",
                self.max_len
            )));
        }
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated,
        })
    }

    /// Tokenizes every input, naming the failing one's index in the error.
    pub fn encode_all<S: AsRef<str>>(&self, texts: &[S], truncate: bool) -> Result<Vec<Encoded>> {
        if texts.is_empty() {
            return Err(Error::InvalidInput("input is an empty list".into()));
        }
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.encode(t.as_ref(), truncate).map_err(|e| match e {
                    Error::InvalidInput(m) => Error::InvalidInput(format!("input[{i}]: {m}")),
                    other => other,
                })
            })
            .collect()
    }
}
