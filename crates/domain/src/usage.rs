//! Tokens the providers count: read from each reply, stored on the rows
//! they paid for (`analyses`' token columns, `embeddings.tokens`), and
//! added up per model by each batch's meter (`runtime::batch`).

use serde_json::Value;

/// What one or more requests used, in the providers' own terms: `input` is
/// input billed at the full price (cache reads and writes apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Input read from the provider's prompt cache (billed lower).
    pub cache_read: u64,
    /// Input written to the prompt cache (Anthropic bills it higher).
    pub cache_write: u64,
}

impl Usage {
    /// The `usage` of an Anthropic Messages, OpenAI Chat Completions, or
    /// embeddings reply (Voyage and OpenAI: `total_tokens`, all input), or
    /// nothing when the reply counts none (the local providers).
    pub fn of_reply(body: &Value) -> Option<Self> {
        let usage = body.get("usage")?;
        let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64);
        if let Some(input) = count("/input_tokens") {
            // Anthropic: input_tokens excludes cache reads and writes.
            return Some(Self {
                input,
                output: count("/output_tokens").unwrap_or(0),
                cache_read: count("/cache_read_input_tokens").unwrap_or(0),
                cache_write: count("/cache_creation_input_tokens").unwrap_or(0),
            });
        }
        if let Some(prompt) = count("/prompt_tokens").or_else(|| count("/total_tokens")) {
            // OpenAI: prompt_tokens includes the cached ones; embeddings have no output.
            let cached = count("/prompt_tokens_details/cached_tokens").unwrap_or(0).min(prompt);
            return Some(Self {
                input: prompt - cached,
                output: count("/completion_tokens").unwrap_or(0),
                cache_read: cached,
                cache_write: 0,
            });
        }
        None
    }

    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }

    /// Adds what `other` used to this.
    pub fn add(&mut self, other: Usage) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// Splits a request's `tokens` among its texts in proportion to their
/// lengths, so the shares add up to `tokens` exactly.
pub fn apportion(tokens: u64, texts: &[String]) -> Vec<u64> {
    let weights: Vec<u64> = texts.iter().map(|t| t.chars().count().max(1) as u64).collect();
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return Vec::new();
    }
    let mut shares: Vec<u64> = weights.iter().map(|w| tokens * w / sum).collect();
    // What rounding down left over goes to the longest texts, one token each.
    let left = tokens - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
    for &i in order.iter().cycle().take(left as usize) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_read_in_each_providers_terms() {
        let anthropic = json!({"usage": {"input_tokens": 1600, "output_tokens": 120,
            "cache_read_input_tokens": 400, "cache_creation_input_tokens": 30}});
        assert_eq!(
            Usage::of_reply(&anthropic),
            Some(Usage { input: 1600, output: 120, cache_read: 400, cache_write: 30 })
        );
        let openai = json!({"usage": {"prompt_tokens": 900, "completion_tokens": 110, "total_tokens": 1010,
            "prompt_tokens_details": {"cached_tokens": 256}}});
        assert_eq!(Usage::of_reply(&openai), Some(Usage { input: 644, output: 110, cache_read: 256, cache_write: 0 }));
        let voyage = json!({"usage": {"total_tokens": 42}});
        assert_eq!(Usage::of_reply(&voyage), Some(Usage { input: 42, ..Usage::default() }));
        assert_eq!(Usage::of_reply(&json!({"analysis": {}})), None);
        assert_eq!(Usage::of_reply(&json!({"usage": {"input_tokens": "many"}})), None, "garbage counts nothing");
    }

    #[test]
    fn shares_follow_the_lengths_and_add_up() {
        let texts: Vec<String> = ["a".repeat(10), "b".repeat(30), "c".repeat(60)].into();
        assert_eq!(apportion(100, &texts), vec![10, 30, 60]);
        let shares = apportion(7, &texts);
        assert_eq!(shares.iter().sum::<u64>(), 7);
        assert!(shares[2] >= shares[1] && shares[1] >= shares[0], "{shares:?}");
        assert_eq!(apportion(5, &[]), Vec::<u64>::new());
    }
}
