//! bkg's build of candle-kernels 0.11.1 (see README.md for what differs from upstream).
//!
//! Upstream compiles the kernels candle loads at run time to PTX for one architecture, which the
//! driver JIT-compiles at a process's first kernel launch (5 s on an H200), and which an older
//! driver cannot JIT at all when nvcc is newer than the driver. Here each of them is a fatbin
//! with SASS for every architecture in `CUDA_COMPUTE_CAP` plus the PTX of the newest one (for
//! GPUs newer than the list): the driver loads the matching SASS as it is. The statically linked
//! MoE/GGUF kernels (libmoe.a) get the same architectures.
//!
//! `CUDA_COMPUTE_CAP` is a list ("80,89,90": sm_80 A100, sm_89 L4/L40S, sm_90 H100/H200) or one
//! value as upstream; unset, `nvidia-smi` is asked as upstream does.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The kernels loaded at run time, one module each (lib.rs's `Id`s, in the same order).
const MODULES: [&str; 11] = [
    "affine",
    "binary",
    "cast",
    "conv",
    "fill",
    "indexing",
    "quantized",
    "reduce",
    "sort",
    "ternary",
    "unary",
];

/// The kernels linked statically (upstream's list).
const MOE_SOURCES: [&str; 15] = [
    "src/moe/moe_gguf.cu",
    "src/moe/moe_wmma.cu",
    "src/moe/moe_wmma_gguf.cu",
    "src/mmvq_gguf.cu",
    "src/mmq_gguf/mmq_quantize.cu",
    "src/mmq_gguf/mmq_instance_q4_0.cu",
    "src/mmq_gguf/mmq_instance_q4_1.cu",
    "src/mmq_gguf/mmq_instance_q5_0.cu",
    "src/mmq_gguf/mmq_instance_q5_1.cu",
    "src/mmq_gguf/mmq_instance_q8_0.cu",
    "src/mmq_gguf/mmq_instance_q2_k.cu",
    "src/mmq_gguf/mmq_instance_q3_k.cu",
    "src/mmq_gguf/mmq_instance_q4_k.cu",
    "src/mmq_gguf/mmq_instance_q5_k.cu",
    "src/mmq_gguf/mmq_instance_q6_k.cu",
];

const COMMON_ARGS: [&str; 5] = [
    "--default-stream",
    "per-thread",
    "--expt-relaxed-constexpr",
    "-std=c++17",
    "-O3",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");
    for var in [
        "CUDA_COMPUTE_CAP",
        "NVCC",
        "NVCC_CCBIN",
        "CUDA_HOME",
        "CUDA_PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc();
    let archs = compute_caps();
    let mut gencode = Vec::new();
    for arch in &archs {
        gencode.push(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    let newest = archs.last().expect("at least one architecture");
    gencode.push(format!(
        "-gencode=arch=compute_{newest},code=compute_{newest}"
    ));
    let start = Instant::now();
    let ccbin = env::var("NVCC_CCBIN")
        .map(|ccbin| vec!["-allow-unsupported-compiler".into(), "-ccbin".into(), ccbin])
        .unwrap_or_default();
    let base = |nvcc_mode: &str| {
        let mut args: Vec<String> = gencode.clone();
        args.push(nvcc_mode.into());
        args.extend(COMMON_ARGS.iter().map(|arg| arg.to_string()));
        args.extend(ccbin.iter().cloned());
        args
    };

    // Run-time kernels: one fatbin per module, included in the crate by ptx.rs.
    let jobs = MODULES.iter().map(|module| {
        let mut args = base("--fatbin");
        args.extend(["-o".into(), path(&out_dir.join(format!("{module}.fatbin")))]);
        args.push(format!("src/{module}.cu"));
        args
    });
    run_parallel(&nvcc, jobs.collect());
    let mut consts = String::new();
    for module in MODULES {
        consts.push_str(&format!(
            "pub const {}: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{module}.fatbin\"));\n",
            module.to_uppercase()
        ));
    }
    std::fs::write(out_dir.join("ptx.rs"), consts).expect("write ptx.rs");
    let modules_s = start.elapsed().as_secs();

    // Statically linked kernels: objects, then one archive.
    let mut objects = Vec::new();
    let mut jobs = Vec::new();
    let mut sources = MOE_SOURCES.to_vec();
    if env::var_os("CARGO_FEATURE_CUTILE").is_some() {
        sources.push("src/moe/moe_align.cu");
    }
    for (i, source) in sources.iter().enumerate() {
        let object = out_dir.join(format!("moe-{i}.o"));
        let mut args = base("-c");
        args.extend(["-Xcompiler".into(), "-fPIC".into()]);
        // bf16 WMMA fragments need compute capability 8.0 (upstream's rule).
        if archs[0] < 80 {
            args.push("-DNO_BF16_KERNEL".into());
        }
        args.extend(["-o".into(), path(&object), (*source).into()]);
        objects.push(path(&object));
        jobs.push(args);
    }
    run_parallel(&nvcc, jobs);
    let mut args = vec!["--lib".into(), "-o".into(), path(&out_dir.join("libmoe.a"))];
    args.extend(objects);
    run_parallel(&nvcc, vec![args]);
    println!(
        "cargo::warning=candle-kernels: SASS for sm_{} and PTX for compute_{newest}; nvcc took \
         {modules_s} s for the 11 modules, {} s for the MoE/GGUF library",
        archs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", sm_"),
        start.elapsed().as_secs() - modules_s
    );
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-lib=moe");
    println!("cargo:rustc-link-lib=dylib=cudart");
    println!("cargo:rustc-link-lib=stdc++");
}

/// `CUDA_COMPUTE_CAP` as a sorted list of numbers ("80,89,90", "8.0 9.0", "sm_90"), or the
/// first GPU's from `nvidia-smi`.
fn compute_caps() -> Vec<u32> {
    let spec = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| {
        let out = Command::new("nvidia-smi")
            .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
            .output()
            .expect("CUDA_COMPUTE_CAP is unset and nvidia-smi cannot run: set CUDA_COMPUTE_CAP");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let mut archs: Vec<u32> = spec
        .split([',', ' ', ';'])
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let s = s.trim().trim_start_matches("sm_").replace('.', "");
            s.parse().unwrap_or_else(|_| {
                panic!("CUDA_COMPUTE_CAP={spec:?}: {s:?} is not a compute capability like 90")
            })
        })
        .collect();
    archs.sort_unstable();
    archs.dedup();
    assert!(
        !archs.is_empty(),
        "CUDA_COMPUTE_CAP={spec:?} names no architecture"
    );
    archs
}

/// `$NVCC`, else `$CUDA_HOME/bin/nvcc` (or CUDA_PATH), else `nvcc` on the PATH.
fn nvcc() -> PathBuf {
    if let Ok(nvcc) = env::var("NVCC") {
        return nvcc.into();
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(root) = env::var(var) {
            let nvcc = Path::new(&root).join("bin/nvcc");
            if nvcc.exists() {
                return nvcc;
            }
        }
    }
    "nvcc".into()
}

fn path(p: &Path) -> String {
    p.to_str().expect("OUT_DIR is UTF-8").to_string()
}

/// Runs nvcc once per argument list, `NUM_JOBS` (cargo's -j) at a time; panics with nvcc's
/// output on the first failure.
fn run_parallel(nvcc: &Path, jobs: Vec<Vec<String>>) {
    let threads = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some(args) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let out = Command::new(nvcc)
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
                if !out.status.success() {
                    panic!(
                        "{} {} failed:\n{}{}",
                        nvcc.display(),
                        args.join(" "),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
}
