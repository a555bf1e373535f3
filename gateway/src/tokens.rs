//! Tokens per API key: what each key has used (prompt and completion tokens, as plugins report
//! them in `usage`) and its optional `tokens_per_minute` limit.
//!
//! ```text
//!  invoke of a generation capability ─▶ admit(key) ─ over the limit? 429 + Retry-After
//!        answer / last stream line {usage} ─▶ charge(key, usage) ─▶ counters, limit's clock
//! ```
//!
//! The limit is a GCRA over tokens: each token moves the key's theoretical arrival time on by
//! `60 s / limit`, and a call is admitted while that time is at most one minute ahead of now (a
//! minute's worth of tokens is the burst). Tokens are known only once the plugin has answered,
//! so the call that crosses the limit completes and the next one waits; `Retry-After` says
//! when the debt is back under a minute. Counts live in this process (like `last_used_at`):
//! they start at zero after a restart and each gateway replica counts its own calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::FastMap;

/// Tokens of one answer or one key, as OpenAI's `usage` names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What one key has used, and its limit clock.
#[derive(Default)]
struct KeyTokens {
    prompt: AtomicU64,
    completion: AtomicU64,
    /// GCRA: when the tokens charged so far would have been spent at the limit's pace.
    tat: Mutex<Option<Instant>>,
}

/// Tokens used per key since the gateway started.
#[derive(Default)]
pub struct Ledger {
    keys: RwLock<FastMap<String, Arc<KeyTokens>>>,
}

/// The limit's burst: a minute's worth of tokens.
const WINDOW: Duration = Duration::from_secs(60);

impl Ledger {
    fn entry(&self, key: &str) -> Arc<KeyTokens> {
        if let Some(k) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return k.clone();
        }
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// `Ok` while `key` is within `limit` tokens per minute; else the seconds to wait.
    pub fn admit(&self, key: &str, limit: Option<u32>, now: Instant) -> Result<(), u32> {
        if limit.is_none() {
            return Ok(());
        }
        let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        else {
            return Ok(());
        };
        let tat = *k.tat.lock().unwrap_or_else(|e| e.into_inner());
        match tat {
            Some(tat) if tat > now + WINDOW => {
                let wait = tat - (now + WINDOW);
                Err(
                    u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                        .unwrap_or(u32::MAX)
                        .max(1),
                )
            }
            _ => Ok(()),
        }
    }

    /// Adds an answer's tokens to `key`'s counts and, when it has a limit, to its clock.
    pub fn charge(&self, key: &str, limit: Option<u32>, usage: Usage, now: Instant) {
        let k = self.entry(key);
        k.prompt.fetch_add(usage.prompt_tokens, Ordering::Relaxed);
        k.completion
            .fetch_add(usage.completion_tokens, Ordering::Relaxed);
        if let Some(limit) = limit.filter(|l| *l > 0) {
            let tokens = usage.prompt_tokens + usage.completion_tokens;
            let per_token = WINDOW.as_secs_f64() / f64::from(limit);
            let cost = Duration::from_secs_f64((per_token * tokens as f64).min(1e9));
            let mut tat = k.tat.lock().unwrap_or_else(|e| e.into_inner());
            let from = tat.map_or(now, |t| t.max(now));
            *tat = Some(from + cost);
        }
    }

    /// Tokens `key` has used since the gateway started.
    pub fn usage(&self, key: &str) -> Usage {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|k| Usage {
                prompt_tokens: k.prompt.load(Ordering::Relaxed),
                completion_tokens: k.completion.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }
}

/// The `usage` of a plugin's whole answer or last stream line, if it reports one.
pub fn usage_of(json: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<WithUsage>(json).ok()?.usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        }
    }

    #[test]
    fn a_key_over_its_tokens_per_minute_waits_until_the_debt_is_under_a_minute() {
        let ledger = Ledger::default();
        let t0 = Instant::now();
        assert_eq!(ledger.admit("k", Some(60), t0), Ok(()));
        // 60 tokens a minute: one per second; 90 tokens put the clock 90 s ahead.
        ledger.charge("k", Some(60), used(80, 10), t0);
        assert_eq!(ledger.admit("k", Some(60), t0), Err(30));
        assert_eq!(
            ledger.admit("k", Some(60), t0 + Duration::from_secs(29)),
            Err(1)
        );
        assert_eq!(
            ledger.admit("k", Some(60), t0 + Duration::from_secs(30)),
            Ok(())
        );
        // Other keys and keys without a limit are not held back.
        assert_eq!(ledger.admit("other", Some(60), t0), Ok(()));
        ledger.charge("free", None, used(1000, 1000), t0);
        assert_eq!(ledger.admit("free", None, t0), Ok(()));
        assert_eq!(ledger.usage("k"), used(80, 10));
        assert_eq!(ledger.usage("free"), used(1000, 1000));
        assert_eq!(ledger.usage("none"), Usage::default());
    }

    #[test]
    fn usage_is_read_from_whole_answers_and_last_lines() {
        assert_eq!(
            usage_of(br#"{"model":"m","text":"hi","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#),
            Some(used(3, 2))
        );
        assert_eq!(usage_of(br#"{"text":"hi"}"#), None);
        assert_eq!(usage_of(b"[1,2]"), None);
    }
}
