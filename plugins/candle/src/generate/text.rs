//! From token ids to streamed text: incremental detokenization and stop sequences.
//!
//! Decoding one token at a time is wrong for byte-level BPE (a character can span tokens, and
//! some tokenizers change spacing with context), so each new token's text is the difference
//! between decoding a short window with and without it, held back while it ends in an
//! incomplete character (U+FFFD), as TGI and vLLM do. Stop sequences may span tokens: text that
//! could be the start of one is held back until it is not.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// `context`: the last few prompt tokens, so the first answer token decodes in context.
    pub fn new(context: &[u32]) -> Self {
        let start = context.len().saturating_sub(5);
        Self {
            ids: context[start..].to_vec(),
            prefix_offset: 0,
            read_offset: context.len() - start,
        }
    }

    /// The text `id` adds (possibly empty, while a character is incomplete).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let decode = |ids: &[u32]| {
            tokenizer
                .decode(ids, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))
        };
        let before = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = decode(&self.ids[self.prefix_offset..])?;
        // A character is at most 4 bytes: after 4 held tokens the bytes are simply invalid,
        // and the replacement character is the text (as a whole decode would show it).
        let held = self.ids.len() - self.read_offset;
        if after.len() > before.len() && (!after.ends_with('\u{FFFD}') || held >= 4) {
            let delta = after
                .get(before.len()..)
                .map(str::to_owned)
                .unwrap_or_default();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            // Keep the window short: the ids before prefix_offset are never decoded again.
            if self.prefix_offset > 64 {
                self.ids.drain(..self.prefix_offset);
                self.read_offset -= self.prefix_offset;
                self.prefix_offset = 0;
            }
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}

impl Detokenizer {
    /// The text of tokens still held back (an incomplete character at the end of the answer).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let decode = |ids: &[u32]| {
            tokenizer
                .decode(ids, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))
        };
        let before = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(after
            .get(before.len()..)
            .map(str::to_owned)
            .unwrap_or_default())
    }
}

/// Cuts the answer at the first stop sequence, holding back text that may begin one.
#[derive(Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    /// Text received but not yet released.
    pending: String,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds `delta`; returns the text safe to release and whether a stop sequence was met (the
    /// text then ends just before it, and nothing more may follow).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.pending.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_owned();
            self.pending.clear();
            return (out, true);
        }
        // The longest tail of `pending` that is a proper prefix of some stop string stays.
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&n| {
                        s.is_char_boundary(n)
                            && self.pending.is_char_boundary(self.pending.len() - n)
                            && self.pending.ends_with(&s[..n])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        (out, false)
    }

    /// What is still held back, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut s = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            let (text, stopped) = s.push(p);
            out.push(text);
            if stopped {
                return (out, true, String::new());
            }
        }
        let rest = s.finish();
        (out, false, rest)
    }

    #[test]
    fn a_stop_sequence_across_pieces_is_cut_and_never_shown() {
        let (out, stopped, _) = run(&["\n\nUser:"], &["Paris.", "\n", "\nUs", "er: hi"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Paris.");
        // The newlines were held back, not streamed and then taken back.
        assert_eq!(out, ["Paris.", "", "", ""]);
    }

    #[test]
    fn text_that_only_looked_like_a_stop_is_released() {
        let (out, stopped, rest) = run(&["END"], &["the E", "ND", "x"]);
        assert!(stopped);
        assert_eq!(out.concat(), "the ");
        assert_eq!(rest, "");
        let (out, stopped, rest) = run(&["END"], &["the E", "nd"]);
        assert!(!stopped);
        assert_eq!(out.concat() + &rest, "the End");
        let (out, _, rest) = run(&[], &["a", "b"]);
        assert_eq!((out.concat(), rest), ("ab".into(), String::new()));
    }

    #[test]
    fn multibyte_text_is_never_split() {
        let (out, stopped, rest) = run(&["é!"], &["café", " ok"]);
        assert!(!stopped);
        assert_eq!(out.concat() + &rest, "café ok");
    }
}
