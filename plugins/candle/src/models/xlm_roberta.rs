//! XLM-RoBERTa (bge-m3, multilingual-e5, bge-reranker): BERT's network with one token type
//! and positions that start after the padding id, so it runs on [`super::BertModel`] and
//! its packed CPU kernels; only the config differs.

use serde_json::Value;

use super::BertConfig;

/// Reads an XLM-RoBERTa `config.json` into the BERT config it amounts to.
pub fn config(value: Value) -> serde_json::Result<BertConfig> {
    // transformers counts positions from padding_idx + 1 (create_position_ids_from_input_ids).
    let pad = value
        .get("pad_token_id")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let mut c: BertConfig = serde_json::from_value(value)?;
    c.position_offset = pad + 1;
    c.architecture = "xlm-roberta";
    Ok(c)
}
