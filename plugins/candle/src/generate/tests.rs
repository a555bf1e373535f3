//! Text generation against what PyPI `transformers` generates with the same tiny random-weight
//! models (scripts/candle/make_tiny_lms.py writes them and reference.json).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use candle_core::{DType, Device};
use serde::Deserialize;
use tokio::sync::mpsc::unbounded_channel;

use super::sampling::Sampler;
use super::*;

const MODELS: [&str; 6] = [
    "qwen2-chat",
    "qwen3-chat",
    "llama-chat",
    "mistral-chat",
    "phi3-chat",
    "gemma-chat",
];

#[derive(Deserialize)]
struct Greedy {
    prompt: String,
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<Message>,
    text: String,
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Reference {
    greedy: Vec<Greedy>,
    chat: Chat,
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tiny")
        .join(name)
}

fn reference(name: &str) -> Reference {
    serde_json::from_slice(&std::fs::read(dir(name).join("reference.json")).unwrap()).unwrap()
}

fn load(name: &str) -> Arc<LanguageModel> {
    Arc::new(LanguageModel::load(&dir(name), &Device::Cpu, DType::F32).unwrap())
}

/// The model's greedy choice, token by token, without the scheduler.
fn greedy_ids(model: &LanguageModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut session = model.session();
    let mut sampler = Sampler::new(&SamplingParams::greedy(), 0);
    let mut tokens = prompt.to_vec();
    let mut logits = model.forward(&mut session, prompt).unwrap();
    for _ in 0..n {
        let t = sampler.next(&logits, &tokens).unwrap();
        tokens.push(t);
        logits = model.forward(&mut session, &[t]).unwrap();
    }
    tokens[prompt.len()..].to_vec()
}

fn request(
    prompt: Vec<u32>,
    params: SamplingParams,
) -> (GenerateRequest, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = unbounded_channel();
    (
        GenerateRequest {
            prompt,
            params,
            ignore_eos: true,
            events: tx,
        },
        rx,
    )
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..SamplingParams::greedy()
    }
}

#[test]
fn greedy_decoding_reproduces_transformers_token_for_token() {
    for name in MODELS {
        let model = load(name);
        let r = reference(name);
        for g in r.greedy.iter().chain([&Greedy {
            prompt: r.chat.text.clone(),
            prompt_ids: r.chat.prompt_ids.clone(),
            ids: r.chat.ids.clone(),
        }]) {
            assert_eq!(
                model.encode(&g.prompt, false).unwrap(),
                g.prompt_ids,
                "{name}: {:?}",
                g.prompt
            );
            assert_eq!(
                greedy_ids(&model, &g.prompt_ids, g.ids.len()),
                g.ids,
                "{name}: {:?}",
                g.prompt
            );
        }
    }
}

/// One pass over conversations at different positions (a prompt joining while two others
/// decode, one of them further along) gives each the logits it gets run alone.
#[test]
fn a_batched_pass_gives_each_conversation_the_logits_it_gets_alone() {
    for name in MODELS {
        let model = load(name);
        let r = reference(name);
        let (a, b, c) = (
            &r.greedy[0].prompt_ids,
            &r.greedy[1].prompt_ids,
            &r.chat.prompt_ids,
        );
        let alone = |prompt: &[u32], next: &[u32]| {
            let mut s = model.session();
            let first = model.forward(&mut s, prompt).unwrap();
            match next.is_empty() {
                true => first,
                false => model.forward(&mut s, next).unwrap(),
            }
        };
        // a and b have run their prompts (b also 3 more tokens); c joins with its prompt.
        let (mut sa, mut sb, mut sc) = (model.session(), model.session(), model.session());
        model.forward(&mut sa, a).unwrap();
        model.forward(&mut sb, b).unwrap();
        model.forward(&mut sb, &[7, 8, 9]).unwrap();
        let batched = model
            .forward_batch(&mut [&mut sa, &mut sb, &mut sc], &[&[5], &[6], c])
            .unwrap();
        assert_eq!(batched.dim(0).unwrap(), 3);
        let b_alone = {
            let mut s = model.session();
            model.forward(&mut s, b).unwrap();
            model.forward(&mut s, &[7, 8, 9]).unwrap();
            model.forward(&mut s, &[6]).unwrap()
        };
        for (row, expected) in [alone(a, &[5]), b_alone, alone(c, &[])].iter().enumerate() {
            let got = batched.get(row).unwrap();
            let diff = (got - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{name}: row {row} differs by {diff}");
        }
        assert_eq!(
            [sa.position(), sb.position(), sc.position()],
            [a.len() + 1, b.len() + 4, c.len()]
        );
    }
}

/// How many of the reference's first tokens a model's own greedy choice reproduces, per
/// prompt (the 3 completions, then the chat), before the first difference.
fn agreeing_prefixes(model: &LanguageModel, r: &Reference) -> Vec<usize> {
    r.greedy
        .iter()
        .map(|g| (&g.prompt_ids, &g.ids))
        .chain([(&r.chat.prompt_ids, &r.chat.ids)])
        .map(|(prompt, ids)| {
            let got = greedy_ids(model, prompt, ids.len());
            got.iter().zip(ids).take_while(|(a, b)| a == b).count()
        })
        .collect()
}

fn load_gguf(name: &str, file: &str) -> Arc<LanguageModel> {
    Arc::new(LanguageModel::load_gguf(&dir(name).join(file), &dir(name), &Device::Cpu).unwrap())
}

/// Quantized weights are not the f32 weights, and a random tiny model's logits are flat (the
/// smallest best-vs-second gap is 1e-3), so a GGUF's greedy answer follows transformers' f32
/// answer only so far. The figures below are what candle's quantized models reproduce of the 32
/// reference tokens (3 completions, then the chat); the test holds them as a floor.
#[test]
fn gguf_greedy_decoding_follows_the_f32_reference_as_far_as_measured() {
    let cases: [(&str, &str, [usize; 4]); 4] = [
        // Measured (x86-64, candle 0.11.1): [18, 12, 1, 13]. A Q/K permutation left out
        // would leave ~0: the RoPE pairs would be wrong from the first token.
        ("llama-chat", "model-q8_0.gguf", [18, 12, 1, 13]),
        // Measured [0, 1, 1, 0]: 4 bits do not hold a gap of 1e-3. Loads and runs, no more.
        ("llama-chat", "model-q4_0.gguf", [0, 1, 1, 0]),
        // Measured [1, 31, 0, 32]: the chat answer is all 32 tokens.
        ("qwen2-chat", "model-q8_0.gguf", [1, 31, 0, 32]),
        // Measured [0, 0, 0, 0].
        ("qwen2-chat", "model-q4_0.gguf", [0, 0, 0, 0]),
    ];
    let mut failures = Vec::new();
    for (name, file, floor) in cases {
        let model = load_gguf(name, file);
        let r = reference(name);
        assert_eq!(
            model.encode(&r.greedy[0].prompt, false).unwrap(),
            r.greedy[0].prompt_ids
        );
        let agree = agreeing_prefixes(&model, &r);
        eprintln!("{name}/{file}: agreeing prefixes of 32 tokens: {agree:?}");
        if agree.iter().zip(floor).any(|(a, f)| *a < f) {
            failures.push(format!("{name}/{file}: {agree:?} < {floor:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn a_gguf_reads_its_metadata_and_the_tokenizer_files_beside_it() {
    for (name, arch, eos) in [
        ("llama-chat", "llama (gguf)", "<|eot_id|>"),
        ("qwen2-chat", "qwen2 (gguf)", "<|im_end|>"),
    ] {
        let model = load_gguf(name, "model-q8_0.gguf");
        assert_eq!(model.model_type, arch);
        assert_eq!(model.max_positions, 256, "{name}: context_length");
        let eos = model.tokenizer.token_to_id(eos).unwrap();
        assert!(model.eos.contains(&eos), "{name}: {:?}", model.eos);
        let r = reference(name);
        let template = model.template.as_ref().unwrap();
        assert_eq!(
            template.render(&r.chat.messages, true).unwrap(),
            r.chat.text
        );
    }
    // Without tokenizer_config.json the GGUF's own chat template and BOS/EOS ids serve.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir("llama-chat").join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let model = LanguageModel::load_gguf(
        &dir("llama-chat").join("model-q8_0.gguf"),
        tmp.path(),
        &Device::Cpu,
    )
    .unwrap();
    let r = reference("llama-chat");
    assert_eq!(
        model
            .template
            .as_ref()
            .unwrap()
            .render(&r.chat.messages, true)
            .unwrap(),
        r.chat.text,
        "bos_token from tokenizer.ggml.bos_token_id"
    );
}

#[test]
fn a_bad_gguf_is_refused_naming_the_file() {
    let d = dir("llama-chat");
    let err = LanguageModel::load_gguf(&d.join("nope.gguf"), &d, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope.gguf"), "{err}");
    let err = LanguageModel::load_gguf(&d.join("tokenizer.json"), &d, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not GGUF"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let err = LanguageModel::load_gguf(&d.join("model-q8_0.gguf"), tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing tokenizer.json"), "{err}");
}

/// candle's quantized Qwen2 cannot be cloned: concurrent conversations each lease an instance,
/// and each still gets the answer it gets alone.
#[tokio::test]
async fn concurrent_gguf_conversations_each_get_the_answer_they_get_alone() {
    for name in ["qwen2-chat", "llama-chat"] {
        let model = load_gguf(name, "model-q8_0.gguf");
        let r = reference(name);
        let alone: Vec<Vec<u32>> = r
            .greedy
            .iter()
            .map(|g| greedy_ids(&model, &g.prompt_ids, 32))
            .collect();
        let scheduler = Scheduler::start(
            model.clone(),
            Limits {
                max_active: 3,
                ..Limits::default()
            },
        );
        let mut pending = Vec::new();
        for _ in 0..2 {
            for (g, ids) in r.greedy.iter().zip(&alone) {
                let (req, rx) = request(g.prompt_ids.clone(), greedy(32));
                scheduler.submit(req).unwrap();
                pending.push((ids, rx));
            }
        }
        for (ids, rx) in pending {
            let answer = collect(rx).await.unwrap();
            assert_eq!(
                answer.text,
                model.tokenizer.decode(ids, true).unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn the_chat_template_renders_as_transformers_does() {
    for name in MODELS {
        let model = load(name);
        let r = reference(name);
        let template = model
            .template
            .as_ref()
            .expect("the tiny models ship a template");
        assert_eq!(
            template.render(&r.chat.messages, true).unwrap(),
            r.chat.text,
            "{name}"
        );
        let err = template
            .render(
                &[Message {
                    role: "wizard".into(),
                    content: "hi".into(),
                }],
                true,
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("messages[0].role"), "{err}");
        assert!(
            template
                .render(&[], true)
                .unwrap_err()
                .to_string()
                .starts_with("messages")
        );
    }
}

#[test]
fn a_template_that_raises_is_the_callers_error() {
    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}{{ messages[0]['content'] | trim }}".into(),
        String::new(),
        String::new(),
    )
    .unwrap();
    let err = t
        .render(
            &[Message {
                role: "assistant".into(),
                content: "x".into(),
            }],
            true,
        )
        .unwrap_err();
    assert!(matches!(err, crate::Error::InvalidInput(_)));
    assert!(err.to_string().contains("roles must alternate"), "{err}");
    // pycompat: Python string methods work as in Jinja2 under transformers.
    let t = ChatTemplate::new(
        "{{ messages[0].content.strip() }}".into(),
        String::new(),
        String::new(),
    )
    .unwrap();
    assert_eq!(
        t.render(
            &[Message {
                role: "user".into(),
                content: "  hi  ".into()
            }],
            false
        )
        .unwrap(),
        "hi"
    );
}

#[tokio::test]
async fn concurrent_conversations_each_get_the_answer_they_get_alone() {
    for name in MODELS {
        let model = load(name);
        let r = reference(name);
        let scheduler = Scheduler::start(
            model.clone(),
            Limits {
                max_active: 4,
                ..Limits::default()
            },
        );
        // 3 prompts × 3 copies: more than max_active, so some join while others generate.
        let mut pending = Vec::new();
        for _ in 0..3 {
            for g in &r.greedy {
                let (req, rx) = request(g.prompt_ids.clone(), greedy(32));
                scheduler.submit(req).unwrap();
                pending.push((g, rx));
            }
        }
        for (g, rx) in pending {
            let answer = collect(rx).await.unwrap();
            let expected = model.tokenizer.decode(&g.ids, true).unwrap();
            assert_eq!(answer.text, expected, "{name}: {:?}", g.prompt);
            assert_eq!(answer.finish_reason, FinishReason::Length);
            assert_eq!(
                answer.usage,
                Usage {
                    prompt_tokens: g.prompt_ids.len(),
                    completion_tokens: 32
                }
            );
        }
    }
}

#[tokio::test]
async fn a_seed_makes_sampling_repeatable() {
    let model = load("qwen2-chat");
    let scheduler = Scheduler::start(model, Limits::default());
    let run = |seed: u64| {
        let (req, rx) = request(
            vec![10, 20, 30],
            SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                seed: Some(seed),
                max_tokens: Some(24),
                ..SamplingParams::default()
            },
        );
        scheduler.submit(req).unwrap();
        collect(rx)
    };
    let (a, b, c) = (
        run(7).await.unwrap(),
        run(7).await.unwrap(),
        run(8).await.unwrap(),
    );
    assert_eq!(a.text, b.text);
    assert_ne!(a.text, c.text, "another seed, another sample");
}

#[tokio::test]
async fn stop_sequences_and_eos_end_the_answer() {
    let model = load("llama-chat");
    let r = reference("llama-chat");
    let g = &r.greedy[0];
    let full = model.tokenizer.decode(&g.ids, true).unwrap();
    // A stop string taken from the middle of the greedy answer.
    let stop: String = full
        .chars()
        .skip(full.chars().count() / 2)
        .take(3)
        .collect();
    let scheduler = Scheduler::start(model.clone(), Limits::default());
    let (req, rx) = request(
        g.prompt_ids.clone(),
        SamplingParams {
            stop: vec![stop.clone()],
            ..greedy(32)
        },
    );
    scheduler.submit(req).unwrap();
    let answer = collect(rx).await.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert_eq!(answer.text, full[..full.find(&stop).unwrap()]);
    // The first greedy token made an end-of-sequence token: the answer stops before it.
    let (mut req, rx) = request(g.prompt_ids.clone(), greedy(32));
    req.ignore_eos = false;
    let eos_model = {
        let mut m = LanguageModel::load(&dir("llama-chat"), &Device::Cpu, DType::F32).unwrap();
        m.eos = vec![g.ids[0]];
        Arc::new(m)
    };
    let s2 = Scheduler::start(eos_model, Limits::default());
    s2.submit(req).unwrap();
    let answer = collect(rx).await.unwrap();
    assert_eq!(
        (
            answer.text.as_str(),
            answer.finish_reason,
            answer.usage.completion_tokens
        ),
        ("", FinishReason::Stop, 0)
    );
}

#[tokio::test]
async fn an_abandoned_request_is_never_run_and_frees_its_place() {
    let model = load("qwen2-chat");
    let scheduler = Scheduler::start(
        model,
        Limits {
            max_active: 1,
            ..Limits::default()
        },
    );
    // The client went away before its turn came.
    let (req, rx) = request(vec![1, 2, 3], greedy(200));
    drop(rx);
    scheduler.submit(req).unwrap();
    let (req, rx) = request(vec![4, 5, 6], greedy(4));
    scheduler.submit(req).unwrap();
    assert_eq!(collect(rx).await.unwrap().usage.completion_tokens, 4);
    assert_eq!(scheduler.counters.cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(
        scheduler.counters.generated_tokens.load(Ordering::Relaxed),
        4,
        "the abandoned one generated nothing"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while scheduler.counters.active.load(Ordering::Relaxed) != 0 {
        assert!(std::time::Instant::now() < deadline, "a slot stayed busy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn bad_requests_are_refused_naming_the_problem() {
    let model = load("qwen2-chat");
    let scheduler = Scheduler::start(model.clone(), Limits::default());
    let context = model.max_positions;
    let cases = [
        (vec![1; context], greedy(1), "the prompt has"),
        (vec![1; 10], greedy(context), "max_tokens"),
        (
            vec![1; 10],
            SamplingParams {
                temperature: 5.0,
                ..Default::default()
            },
            "temperature",
        ),
        (vec![], greedy(1), "the prompt is empty"),
    ];
    for (prompt, params, says) in cases {
        let (req, _rx) = request(prompt, params);
        let err = scheduler.submit(req).unwrap_err();
        assert!(matches!(err, crate::Error::InvalidInput(_)), "{err}");
        assert!(err.to_string().starts_with(says), "{err}");
    }
}

mod plugin {
    use std::time::Instant;

    use bkg_plugin_api::{InvokeContext, Plugin, StartContext};
    use futures_util::StreamExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::CandlePlugin;

    fn ctx() -> InvokeContext {
        InvokeContext {
            request_id: "test".into(),
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    async fn started(model: &str) -> CandlePlugin {
        let plugin = CandlePlugin::default();
        plugin
            .start(StartContext {
                plugin_id: "llm".into(),
                config: json!({"model": {"path": dir(model)}, "device": "cpu"}),
            })
            .await
            .unwrap();
        plugin
    }

    #[tokio::test]
    async fn chat_answers_whole_and_streamed_alike() {
        let plugin = started("qwen2-chat").await;
        let r = reference("qwen2-chat");
        let body = json!({"messages": r.chat.messages, "temperature": 0, "max_tokens": 32, "ignore_eos": true});
        let whole = plugin.invoke("chat", body.clone(), ctx()).await.unwrap();
        let model = LanguageModel::load(&dir("qwen2-chat"), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            whole["text"],
            model.tokenizer.decode(&r.chat.ids, true).unwrap()
        );
        assert_eq!(whole["finish_reason"], "length");
        assert_eq!(
            whole["usage"],
            json!({"prompt_tokens": r.chat.prompt_ids.len(), "completion_tokens": 32, "total_tokens": r.chat.prompt_ids.len() + 32})
        );
        let chunks: Vec<Value> = plugin
            .invoke_stream("chat", body, ctx())
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert!(chunks.len() > 2, "{chunks:?}");
        let text: String = chunks.iter().filter_map(|c| c["text"].as_str()).collect();
        assert_eq!(text, whole["text"].as_str().unwrap());
        let last = chunks.last().unwrap();
        assert_eq!(
            (&last["finish_reason"], &last["usage"]),
            (&whole["finish_reason"], &whole["usage"])
        );
        let telemetry = plugin.telemetry();
        assert_eq!(telemetry["generated_tokens"], 64);
    }

    #[tokio::test]
    async fn chat_runs_a_gguf_named_by_gguf_file() {
        let plugin = CandlePlugin::default();
        plugin
            .start(StartContext {
                plugin_id: "llm".into(),
                config: json!({"model": {"path": dir("qwen2-chat"), "gguf_file": "model-q8_0.gguf"}, "device": "cpu"}),
            })
            .await
            .unwrap();
        let r = reference("qwen2-chat");
        let body = json!({"messages": r.chat.messages, "temperature": 0, "max_tokens": 32, "ignore_eos": true});
        let out = plugin.invoke("chat", body, ctx()).await.unwrap();
        let model = LanguageModel::load_gguf(
            &dir("qwen2-chat").join("model-q8_0.gguf"),
            &dir("qwen2-chat"),
            &Device::Cpu,
        )
        .unwrap();
        let ids = greedy_ids(&model, &r.chat.prompt_ids, 32);
        assert_eq!(out["text"], model.tokenizer.decode(&ids, true).unwrap());
        assert_eq!(
            out["model"],
            json!(format!("{}/model-q8_0.gguf", dir("qwen2-chat").display()))
        );
        // The Q8_0 Qwen2 reproduces transformers' f32 chat answer whole (measured, as in
        // gguf_greedy_decoding_follows_the_f32_reference_as_far_as_measured).
        assert_eq!(ids, r.chat.ids);
        // model.load refuses a gguf_file that leaves the directory.
        let err = plugin
            .invoke(
                "model.load",
                json!({"path": "x", "gguf_file": "../../etc/x.gguf"}),
                ctx(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("gguf_file"), "{err}");
    }

    #[tokio::test]
    async fn completions_add_the_tokenizers_special_tokens_and_stop() {
        let plugin = started("llama-chat").await;
        let r = reference("llama-chat");
        let g = &r.greedy[0];
        let out = plugin
            .invoke(
                "completions",
                json!({"prompt": g.prompt, "temperature": 0, "max_tokens": 32, "ignore_eos": true}),
                ctx(),
            )
            .await
            .unwrap();
        let model = LanguageModel::load(&dir("llama-chat"), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(out["text"], model.tokenizer.decode(&g.ids, true).unwrap());
    }

    #[tokio::test]
    async fn the_wrong_kind_of_model_or_request_is_a_clear_422() {
        let plugin = started("qwen2-chat").await;
        let err = plugin
            .invoke("model.infer", json!({"input": "hi"}), ctx())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("generates text"), "{err}");
        let err = plugin
            .invoke(
                "chat",
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                ctx(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.category(), "invalid_input");
        assert!(err.to_string().contains("messages[0].role"), "{err}");
        let err = plugin
            .invoke("completions", json!({"prompt": "x ".repeat(400)}), ctx())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
        // An embedder loaded instead: chat names what it serves.
        let embed = started("bert-embed").await;
        let err = embed
            .invoke(
                "chat",
                json!({"messages": [{"role": "user", "content": "x"}]}),
                ctx(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("causal language model"), "{err}");
        // The plugin still answers afterwards.
        let ok = plugin
            .invoke(
                "chat",
                json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
                ctx(),
            )
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn capabilities_declare_streaming() {
        let caps = CandlePlugin::default().capabilities();
        let streaming: Vec<_> = caps
            .iter()
            .filter(|c| c.streaming)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(streaming, ["chat", "completions"]);
    }
}
