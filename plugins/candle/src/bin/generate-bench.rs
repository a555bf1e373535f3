//! Text generation benchmark: tokens/s and time to first token at several numbers of
//! concurrent streams, through the plugin's scheduler (continuous batching) in process.
//!
//! ```text
//! scripts/candle/bench-generate.sh     # makes the model and prompts, runs this and PyTorch
//! ```
//!
//! Every stream gets one prompt (token ids from `--prompts`, as PyTorch gets them), greedy
//! decoding and exactly `--new-tokens` tokens (end-of-sequence ignored), all submitted at
//! once. One JSON line per concurrency: wall time, tokens/s over all streams, and time to
//! first token (p50, p99) from submission to the first text event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bkg_plugin_candle::config::Dtype;
use bkg_plugin_candle::generate::{
    Event, GenerateRequest, LanguageModel, Limits, SamplingParams, Scheduler,
};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks text generation (continuous batching)")]
struct Args {
    /// Model directory in Hugging Face layout.
    #[arg(long)]
    model_dir: PathBuf,
    /// JSON list of prompts, each a list of token ids.
    #[arg(long)]
    prompts: PathBuf,
    /// Comma-separated numbers of concurrent streams.
    #[arg(long, default_value = "1,8,32")]
    streams: String,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Use the first this many tokens of each prompt.
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// Runs per concurrency; the fastest is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

struct Run {
    wall: Duration,
    ttft: Vec<Duration>,
    tokens: usize,
}

async fn run(
    s: &Scheduler,
    prompts: &[Vec<u32>],
    n: usize,
    new_tokens: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        s.submit(GenerateRequest {
            prompt: prompts[i % prompts.len()].clone(),
            params: SamplingParams {
                max_tokens: Some(new_tokens),
                ..SamplingParams::greedy()
            },
            ignore_eos: true,
            events: tx,
        })?;
        streams.push(tokio::spawn(async move {
            let mut first = None;
            while let Some(e) = rx.recv().await {
                match e {
                    Event::Text(_) => {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                    Event::Done { usage, .. } => return Ok((first, usage.completion_tokens)),
                    Event::Failed(m) => anyhow::bail!(m),
                }
            }
            anyhow::bail!("the stream ended without an answer")
        }));
    }
    let mut ttft = Vec::with_capacity(n);
    let mut tokens = 0;
    for h in streams {
        let (first, count) = h.await??;
        ttft.push(first.context("no text came")?);
        tokens += count;
    }
    ttft.sort();
    Ok(Run {
        wall: started.elapsed(),
        ttft,
        tokens,
    })
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut prompts: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(&args.prompts)?)?;
    for p in &mut prompts {
        p.truncate(args.prompt_len);
    }
    let dtype = if args.dtype == "bf16" {
        Dtype::Bf16
    } else {
        Dtype::F32
    };
    let load = Instant::now();
    let model = Arc::new(LanguageModel::load(
        &args.model_dir,
        &candle_core::Device::Cpu,
        dtype.candle(),
    )?);
    let load_s = load.elapsed().as_secs_f64();
    let streams: Vec<usize> = args
        .streams
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let most = streams.iter().copied().max().unwrap_or(1);
    let s = Scheduler::start(
        model,
        Limits {
            max_active: most,
            max_queued: most,
            default_max_tokens: args.new_tokens,
        },
    );
    // Warm-up: one short answer (allocations, thread pool).
    run(&s, &prompts, 1, 4).await?;
    for n in streams {
        let mut best: Option<Run> = None;
        for _ in 0..args.repeat {
            let r = run(&s, &prompts, n, args.new_tokens).await?;
            if best.as_ref().is_none_or(|b| r.wall < b.wall) {
                best = Some(r);
            }
        }
        let r = best.expect("repeat >= 1");
        println!(
            "{}",
            json!({
                "contender": "bkg-candle",
                "dtype": args.dtype,
                "streams": n,
                "new_tokens": args.new_tokens,
                "prompt_tokens": prompts[0].len(),
                "wall_s": r.wall.as_secs_f64(),
                "tokens_per_s": r.tokens as f64 / r.wall.as_secs_f64(),
                "ttft_p50_ms": pct(&r.ttft, 0.5),
                "ttft_p99_ms": pct(&r.ttft, 0.99),
                "load_s": load_s,
            })
        );
    }
    Ok(())
}
