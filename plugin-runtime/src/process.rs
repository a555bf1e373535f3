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
        self.sample_at(now, cpu)
    }

    /// [`Self::sample`] for a reading of `cpu` seconds taken at `now` (tests pass both).
    fn sample_at(&mut self, now: Instant, cpu: f64) -> f64 {
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn this_process_has_memory_and_its_cpu_time_grows_with_work() {
        assert!(rss_bytes(None).is_some_and(|b| b > 1024 * 1024));
        let before = cpu_seconds().expect("/proc/self/stat");
        // Work until the kernel has charged this process 50 ms more (5 clock ticks), however
        // long that takes on a busy machine; the deadline only guards against a counter that
        // never moves.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        while cpu_seconds().expect("/proc/self/stat") < before + 0.05 {
            assert!(Instant::now() < deadline, "CPU time stayed at {before} s");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let t0 = Instant::now();
        let mut sampler = CpuSampler {
            last: Some((t0, 10.0)),
        };
        // Half a core for two seconds, then a core and a half (two threads) for one.
        let half = sampler.sample_at(t0 + Duration::from_secs(2), 11.0);
        assert!((half - 50.0).abs() < 1e-9, "{half}");
        let more = sampler.sample_at(t0 + Duration::from_secs(3), 12.5);
        assert!((more - 150.0).abs() < 1e-9, "{more}");
        // No time passed, or a counter that went back: 0, never a division by zero or below 0.
        assert_eq!(sampler.sample_at(t0 + Duration::from_secs(3), 13.0), 0.0);
        assert_eq!(sampler.sample_at(t0 + Duration::from_secs(4), 1.0), 0.0);
        let mut first = CpuSampler { last: None };
        assert_eq!(
            first.sample_at(t0, 5.0),
            0.0,
            "the first sample has no interval"
        );
        assert_eq!(first.sample_at(t0 + Duration::from_secs(1), 5.25), 25.0);
    }
}
