//! The few process-control calls the supervisor needs that std and tokio do not offer.
#![allow(unsafe_code)]

use std::io;

/// Configures a child before exec: it dies with the supervisor (no orphans even if `bkg up` is
/// killed with SIGKILL) and gets its own process group, so a terminal's Ctrl-C reaches only the
/// supervisor, which then stops children gracefully.
pub fn prepare_child(cmd: &mut tokio::process::Command) {
    // Our pid, taken before the fork: read in the child, getppid() would already name init (or
    // a subreaper) if we died before prctl, and the check below would pass with no parent.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe functions
    // (prctl, setpgid, getppid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other("supervisor exited"));
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks a process to stop (SIGTERM).
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions; pid is a child we spawned and still own.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resident set size of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
