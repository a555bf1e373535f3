//! `rerank` and `classify`: cross-encoders and sequence classifiers, in TEI's shapes.
//!
//! ```text
//!  rerank {query, texts}  ─▶ (query, text) pairs ─▶ batcher ─▶ one logit each
//!                          ─▶ sigmoid (unless raw_scores) ─▶ sorted by score ─▶ top_n
//!  classify {inputs}      ─▶ inputs              ─▶ batcher ─▶ logits [labels]
//!                          ─▶ softmax (sigmoid for one label) ─▶ [{label, score}] by score
//! ```

use bkg_plugin_api::{CapabilityDescriptor, Cost, CostUnit};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

pub const RERANK: &str = "rerank";
pub const CLASSIFY: &str = "classify";

pub fn descriptors() -> Vec<CapabilityDescriptor> {
    vec![
        CapabilityDescriptor {
            id: RERANK.into(),
            name: "Rerank (TEI-compatible)".into(),
            description: "Scores each text's relevance to the query with a cross-encoder and returns them \
                best first (TEI's /rerank). The score is the sigmoid of the model's logit, or the logit itself \
                with raw_scores. Served only when the loaded model is a one-label *ForSequenceClassification \
                checkpoint; at most the config's max_rerank_texts texts per call."
                .into(),
            input_schema: json!({
                "type": "object",
                "required": ["query", "texts"],
                "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "texts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                    "top_n": {"type": "integer", "minimum": 1, "description": "Return only the best n."},
                    "return_text": {"type": "boolean", "default": false},
                    "raw_scores": {"type": "boolean", "default": false, "description": "Logits instead of sigmoid scores."},
                    "truncate": {"type": "boolean", "description": "Cut over-long pairs; default from config (true)."},
                    "model": {"type": "string"}
                },
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "array",
                "description": "Best first.",
                "items": {
                    "type": "object",
                    "required": ["index", "score"],
                    "properties": {
                        "index": {"type": "integer", "description": "Position in `texts`."},
                        "score": {"type": "number"},
                        "text": {"type": "string"}
                    }
                }
            }),
            management: false,
            cost: Some(per_item("/texts")),
            streaming: false,
        },
        CapabilityDescriptor {
            id: CLASSIFY.into(),
            name: "Classify (TEI-compatible)".into(),
            description: "Classifies each input with a *ForSequenceClassification model: every label of \
                id2label with its softmax probability (sigmoid for a one-label model), best first. One input \
                gives one list; a list of inputs gives one list per input (TEI's /predict)."
                .into(),
            input_schema: json!({
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
                        ]
                    },
                    "raw_scores": {"type": "boolean", "default": false, "description": "Logits instead of probabilities."},
                    "truncate": {"type": "boolean"},
                    "model": {"type": "string"}
                },
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "array",
                "items": {"oneOf": [label_score(), {"type": "array", "items": label_score()}]}
            }),
            management: false,
            cost: Some(per_item("/inputs")),
            streaming: false,
        },
    ]
}

fn label_score() -> Value {
    json!({
        "type": "object",
        "required": ["label", "score"],
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}}
    })
}

fn per_item(field: &str) -> Cost {
    Cost {
        unit: CostUnit::Inputs,
        field: Some(field.into()),
        per: None,
    }
}

fn invalid(e: serde_json::Error) -> Error {
    Error::InvalidInput(e.to_string())
}

/// A `rerank` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    pub top_n: Option<usize>,
    #[serde(default)]
    pub return_text: bool,
    #[serde(default)]
    pub raw_scores: bool,
    pub truncate: Option<bool>,
    /// Accepted for clients that always send it; the loaded model answers.
    #[allow(dead_code)]
    pub model: Option<String>,
}

/// Parses and checks a `rerank` request; `max_texts` is the config's `max_rerank_texts`.
pub fn parse_rerank(payload: Value, max_texts: usize) -> Result<RerankRequest> {
    let req: RerankRequest = serde_json::from_value(payload).map_err(invalid)?;
    if req.query.trim().is_empty() {
        return Err(Error::InvalidInput("query: must not be empty".into()));
    }
    if req.texts.is_empty() {
        return Err(Error::InvalidInput(
            "texts: must hold at least one text".into(),
        ));
    }
    if req.texts.len() > max_texts {
        return Err(Error::InvalidInput(format!(
            "texts: {} texts in one call; at most {max_texts} (max_rerank_texts)",
            req.texts.len()
        )));
    }
    if let Some(i) = req.texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::InvalidInput(format!(
            "texts[{i}]: must not be empty"
        )));
    }
    if req.top_n == Some(0) {
        return Err(Error::InvalidInput("top_n: must be at least 1".into()));
    }
    Ok(req)
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `[{index, score, text?}]` best first; ties keep input order.
pub fn rerank_response(req: &RerankRequest, logits: &[Vec<f32>]) -> Value {
    let mut ranked: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let logit = l.first().copied().unwrap_or(f32::NAN);
            (
                i,
                if req.raw_scores {
                    logit
                } else {
                    sigmoid(logit)
                },
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(req.top_n.unwrap_or(usize::MAX));
    Value::Array(
        ranked
            .into_iter()
            .map(|(index, score)| match req.return_text {
                true => json!({"index": index, "score": score, "text": req.texts[index]}),
                false => json!({"index": index, "score": score}),
            })
            .collect(),
    )
}

/// A `classify` request.
#[derive(Debug)]
pub struct ClassifyRequest {
    pub inputs: Vec<String>,
    /// `inputs` was one string: the answer is one list, not a list of lists.
    pub single: bool,
    pub raw_scores: bool,
    pub truncate: Option<bool>,
}

pub fn parse_classify(payload: Value, max_inputs: usize) -> Result<ClassifyRequest> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        inputs: Value,
        #[serde(default)]
        raw_scores: bool,
        truncate: Option<bool>,
        #[allow(dead_code)]
        model: Option<String>,
    }
    let raw: Raw = serde_json::from_value(payload).map_err(invalid)?;
    let wrong = || Error::InvalidInput("inputs: must be a string or an array of strings".into());
    let (inputs, single) = match raw.inputs {
        Value::String(s) => (vec![s], true),
        Value::Array(items) => (
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>>>()?,
            false,
        ),
        _ => return Err(wrong()),
    };
    if inputs.is_empty() {
        return Err(Error::InvalidInput(
            "inputs: must hold at least one text".into(),
        ));
    }
    if inputs.len() > max_inputs {
        return Err(Error::InvalidInput(format!(
            "inputs: {} texts in one call; at most {max_inputs} (max_rerank_texts)",
            inputs.len()
        )));
    }
    Ok(ClassifyRequest {
        inputs,
        single,
        raw_scores: raw.raw_scores,
        truncate: raw.truncate,
    })
}

/// Probabilities of one input's logits: softmax over the labels, or the sigmoid of a lone one.
pub fn probabilities(logits: &[f32]) -> Vec<f32> {
    if let [one] = logits {
        return vec![sigmoid(*one)];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

pub fn classify_response(req: &ClassifyRequest, labels: &[String], logits: &[Vec<f32>]) -> Value {
    let per_input: Vec<Value> = logits
        .iter()
        .map(|l| {
            let scores = match req.raw_scores {
                true => l.clone(),
                false => probabilities(l),
            };
            let mut pairs: Vec<(&String, f32)> = labels.iter().zip(scores).collect();
            pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
            Value::Array(
                pairs
                    .into_iter()
                    .map(|(label, score)| json!({"label": label, "score": score}))
                    .collect(),
            )
        })
        .collect();
    match (req.single, per_input.len()) {
        (true, 1) => per_input.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(per_input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerank_requests_are_checked_field_by_field() {
        let err = |p: Value| parse_rerank(p, 3).unwrap_err().to_string();
        assert!(err(json!({"query": "q", "texts": []})).starts_with("texts:"));
        assert!(err(json!({"query": "q", "texts": ["a", "b", "c", "d"]})).contains("at most 3"));
        assert!(err(json!({"query": " ", "texts": ["a"]})).starts_with("query:"));
        assert!(err(json!({"query": "q", "texts": ["a", ""]})).starts_with("texts[1]:"));
        assert!(err(json!({"query": "q", "texts": ["a"], "top_n": 0})).starts_with("top_n:"));
        assert!(err(json!({"query": "q", "text": ["a"]})).contains("unknown field"));
        assert!(parse_rerank(json!({"query": "q", "texts": ["a"], "model": "m"}), 3).is_ok());
    }

    #[test]
    fn rerank_sorts_by_score_and_cuts_at_top_n() {
        let req = parse_rerank(
            json!({"query": "q", "texts": ["a", "b", "c"], "top_n": 2, "return_text": true}),
            10,
        )
        .unwrap();
        let out = rerank_response(&req, &[vec![-1.0], vec![2.0], vec![0.5]]);
        assert_eq!(out[0]["index"], 1);
        assert_eq!(out[0]["text"], "b");
        assert_eq!(out[1]["index"], 2);
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert!((out[0]["score"].as_f64().unwrap() - f64::from(sigmoid(2.0))).abs() < 1e-6);
    }

    #[test]
    fn classify_gives_softmax_per_input_best_first() {
        let labels = ["neg".to_owned(), "pos".to_owned()];
        let req = parse_classify(json!({"inputs": ["x", "y"]}), 10).unwrap();
        let out = classify_response(&req, &labels, &[vec![0.0, 1.0], vec![3.0, 1.0]]);
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[0][0]["label"], "pos");
        assert_eq!(out[1][0]["label"], "neg");
        let sum: f64 = out[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["score"].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-6);
        let single = parse_classify(json!({"inputs": "x"}), 10).unwrap();
        assert!(classify_response(&single, &labels, &[vec![0.0, 1.0]])[0].is_object());
        assert!(parse_classify(json!({"inputs": []}), 10).is_err());
        assert!(
            parse_classify(json!({"inputs": ["a", "b"]}), 1)
                .unwrap_err()
                .to_string()
                .starts_with("inputs:")
        );
    }
}
