//! Throughput, start-up and memory benchmark for the Candle embedding plugin.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p bkg-plugin-candle --bin candle-bench -- \
//!     --model-dir "$BKG_TEST_MINILM_DIR" --inputs plugins/candle/testdata/bench_inputs.json
//! ```
//!
//! Modes, each on the short and the long input set:
//! - `direct-b1`  : the engine, one input per forward pass;
//! - `direct-b32` : the engine, inputs sorted by length and cut into batches of 32 (what
//!   sentence-transformers' `encode(batch_size=32)` does);
//! - `plugin-on`  : `model.infer` through the plugin, one input per call from
//!   `--concurrency` tasks, dynamic batching on;
//! - `plugin-off` : the same with batching off.
//!
//! `--startup` loads the model, embeds one input and exits, for start → first-embedding and
//! peak-RSS measurements from outside (`/usr/bin/time -v`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bkg_plugin_api::{InvokeContext, Plugin, StartContext};
use bkg_plugin_candle::config::Dtype;
use bkg_plugin_candle::{CandlePlugin, Embedder, LoadOptions};
use clap::Parser;
use serde::Deserialize;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the Candle embedding plugin")]
struct Args {
    /// Model directory in HF layout (all-MiniLM-L6-v2).
    #[arg(long, env = "BKG_TEST_MINILM_DIR")]
    model_dir: PathBuf,
    /// Inputs file written by scripts/candle/make_bench_inputs.py.
    #[arg(long, default_value = "plugins/candle/testdata/bench_inputs.json")]
    inputs: PathBuf,
    /// Compute precision.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// `auto` (hand-written AVX-512 kernels when available) or `candle` (portable ops only).
    #[arg(long, default_value = "auto", value_parser = ["auto", "candle"])]
    kernels: String,
    /// Concurrent callers in the plugin modes.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Runs per measurement; the fastest is reported (robust on a shared, noisy machine).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Comma-separated modes to run.
    #[arg(long, default_value = "direct-b1,direct-b32,plugin-on,plugin-off")]
    modes: String,
    /// Comma-separated input sets to run (`short`, `long`); e.g. only one under a profiler.
    #[arg(long, default_value = "short,long")]
    sets: String,
    /// Only load, embed one input, report and exit.
    #[arg(long)]
    startup: bool,
}

#[derive(Deserialize)]
struct Inputs {
    short: Vec<String>,
    long: Vec<String>,
}

fn dtype(s: &str) -> Dtype {
    if s == "bf16" { Dtype::Bf16 } else { Dtype::F32 }
}

/// Peak resident set size so far, from /proc (kB → MB).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn direct(m: &Embedder, texts: &[String], batch: usize) -> anyhow::Result<Duration> {
    let mut order: Vec<&String> = texts.iter().collect();
    if batch > 1 {
        let enc = m.encoder();
        order.sort_by_cached_key(|t| enc.encode(t, true).map(|e| e.len()).unwrap_or(0));
    }
    let started = Instant::now();
    for chunk in order.chunks(batch) {
        m.embed(chunk, true)?;
    }
    Ok(started.elapsed())
}

async fn through_plugin(
    plugin: Arc<CandlePlugin>,
    texts: Arc<Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (plugin, texts, next) =
                (Arc::clone(&plugin), Arc::clone(&texts), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(text) = texts.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let ctx = InvokeContext {
                        request_id: i.to_string(),
                        deadline: Instant::now() + Duration::from_secs(600),
                    };
                    plugin
                        .invoke("model.infer", json!({"input": text}), ctx)
                        .await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed())
}

async fn started_plugin(args: &Args, batching: bool) -> anyhow::Result<Arc<CandlePlugin>> {
    let plugin = CandlePlugin::default();
    let config = json!({
        "model": {"path": args.model_dir},
        "batching": batching,
        "max_batch_size": 32,
        "dtype": args.dtype,
        "kernels": args.kernels,
        "queue_capacity": 4096,
    });
    plugin
        .start(StartContext {
            plugin_id: "bench".into(),
            config,
        })
        .await?;
    Ok(Arc::new(plugin))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let process_start = Instant::now();
    let args = Args::parse();
    let opts = LoadOptions {
        dtype: dtype(&args.dtype),
        cpu_kernels: args.kernels == "auto",
        ..LoadOptions::default()
    };
    let m = Embedder::load(&args.model_dir, "all-MiniLM-L6-v2".into(), &opts)
        .context("loading the model")?;
    let first = m.embed(&["The first embedding after start."], true)?;
    let ready = process_start.elapsed();
    if args.startup {
        println!(
            "{}",
            json!({"contender": "candle", "dtype": args.dtype, "kernels": m.info().kernels, "ready_s": ready.as_secs_f64(),
                   "dimensions": first[0].len(), "peak_rss_mb": peak_rss_mb()})
        );
        return Ok(());
    }
    let inputs: Inputs =
        serde_json::from_str(&std::fs::read_to_string(&args.inputs).context("reading inputs")?)?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    eprintln!(
        "candle-bench: dtype {}, RAYON_NUM_THREADS {threads}, ready in {:.3}s",
        args.dtype,
        ready.as_secs_f64()
    );
    // Warm-up: one batch of each shape class.
    m.embed(&inputs.short[..32], true)?;
    m.embed(&inputs.long[..8], true)?;
    let modes: Vec<&str> = args.modes.split(',').collect();
    // Load only what the chosen modes use, so peak RSS reflects one served model when only
    // plugin modes run.
    let m = modes.iter().any(|m| m.starts_with("direct")).then_some(m);
    let on = match modes.contains(&"plugin-on") {
        true => Some(started_plugin(&args, true).await?),
        false => None,
    };
    let off = match modes.contains(&"plugin-off") {
        true => Some(started_plugin(&args, false).await?),
        false => None,
    };
    for mode in modes {
        for (set, texts) in [("short", &inputs.short), ("long", &inputs.long)] {
            if !args.sets.split(',').any(|s| s == set) {
                continue;
            }
            let mut elapsed = Duration::MAX;
            for _ in 0..args.repeat.max(1) {
                let once = match (mode, &m, &on, &off) {
                    ("direct-b1", Some(m), _, _) => direct(m, texts, 1)?,
                    ("direct-b32", Some(m), _, _) => direct(m, texts, 32)?,
                    ("plugin-on", _, Some(p), _) | ("plugin-off", _, _, Some(p)) => {
                        through_plugin(Arc::clone(p), Arc::new(texts.clone()), args.concurrency)
                            .await?
                    }
                    (other, ..) => bail!("unknown mode {other}"),
                };
                elapsed = elapsed.min(once);
            }
            let rate = texts.len() as f64 / elapsed.as_secs_f64();
            println!(
                "{}",
                json!({"contender": "candle", "dtype": args.dtype, "mode": mode, "set": set, "inputs": texts.len(),
                       "seconds": elapsed.as_secs_f64(), "sentences_per_s": rate, "best_of": args.repeat.max(1)})
            );
        }
    }
    println!(
        "{}",
        json!({"contender": "candle", "peak_rss_mb": peak_rss_mb()})
    );
    Ok(())
}
