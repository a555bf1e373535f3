//! CPU and memory of this process, read from procfs (Linux).

use std::time::Instant;

/// Clock ticks per second for `/proc/self/stat` times; 100 on every Linux ABI bkg targets.
const CLOCK_TICKS: f64 = 100.0;

/// Resident set size of `pid` (or this process) in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds consumed by this process.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// CPU use as a percentage of one core, averaged since the previous sample.
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, f64)>,
}

impl CpuSampler {
    pub fn new() -> Self {
        Self {
            last: cpu_seconds().map(|s| (Instant::now(), s)),
        }
    }

    /// Percent of one core since the last call (0 on the first).
    pub fn sample(&mut self) -> f64 {
        let now = Instant::now();
        let Some(cpu) = cpu_seconds() else { return 0.0 };
        let percent = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    ((cpu - before) / wall * 100.0).max(0.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu));
        percent
    }
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_burns_cpu() {
        assert!(rss_bytes(None).is_some_and(|b| b > 1024 * 1024));
        let mut sampler = CpuSampler::new();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let percent = sampler.sample();
        assert!(
            percent > 20.0,
            "a busy loop should show CPU use, got {percent}"
        );
    }
}
