//! Child processes and their CPU time.
//!
//! The callout and the null responder run as children of the benchmark (the benchmark
//! binary re-executes itself with a hidden subcommand), so that their CPU time can be
//! read from each one's CPU clock separately from nats-server's and from the load
//! generator's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A child process, killed on drop (and by the kernel if the benchmark dies).
pub struct Process {
    child: Child,
    what: String,
    log: std::path::PathBuf,
}

impl Process {
    /// Start this executable again with `args`, logging stderr to `log`, and wait until
    /// it prints `READY` on stdout (it does once it serves).
    pub fn spawn_self(
        what: &str,
        args: &[&str],
        log: &Path,
        ready_within: Duration,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the benchmark executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(log)
                    .with_context(|| format!("cannot create {}", log.display()))?,
            ));
        nats_callout_tests::dies_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut process = Self {
            child,
            what: what.to_owned(),
            log: log.to_path_buf(),
        };
        let line = rx.recv_timeout(ready_within).unwrap_or_default();
        if line.trim() != "READY" {
            let _ = process.child.kill();
            bail!(
                "{what} did not get ready within {ready_within:?}: {}",
                process.log_text()
            );
        }
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `signal` (e.g. `libc::SIGTERM`), without waiting.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        nats_callout_tests::signal(&self.child, signal)
            .with_context(|| format!("cannot signal {}", self.what))
    }

    /// Wait (without blocking the async runtime) until the process exits, at most
    /// `within`; its exit status.
    pub async fn exited(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        nats_callout_tests::exited(&mut self.child, within, &self.what).await
    }

    /// Fail if the process has exited (it must serve for the whole measurement).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}: {}", self.what, self.log_text());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds a process has used so far (all its threads, also the
/// ones that have exited), from the kernel's CPU clock of that process: nanoseconds,
/// where `/proc/<pid>/stat` rounds to clock ticks (10 ms). With ticks, a one-client
/// round of 400 connects read ±25 µs per connect, and two runs of one build differed by
/// up to 8 µs per connect in the WASM − native row that issue #23 measures.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into the variable we own.
    let err = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if err != 0 {
        bail!(
            "no CPU clock for process {pid}: {}",
            std::io::Error::from_raw_os_error(err)
        );
    }
    // SAFETY: clock_gettime writes one timespec into the zeroed struct we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        bail!(
            "cannot read the CPU clock of process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// CPU seconds of this process (the load generator), from `getrusage`: microsecond
/// resolution.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Resident memory of process `pid`, bytes (`VmRSS` in /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    Status::of(pid)?.number("VmRSS").map(|kib| kib * 1024)
}

/// One read of `/proc/<pid>/status`.
pub struct Status(String);

impl Status {
    pub fn of(pid: u32) -> Result<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(Self)
            .with_context(|| format!("cannot read /proc/{pid}/status"))
    }

    /// The number after `field:`: `VmRSS` and `RssAnon` in KiB, `Threads` a count.
    pub fn number(&self, field: &str) -> Result<u64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("no {field} in /proc status"))
    }
}

/// Raise the soft open-files limit to at least `want` (up to the hard limit): a storm
/// of N clients holds N sockets here and N in nats-server, which inherits the limit.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_clock_reads_what_getrusage_does() -> Result<()> {
        // Burn some CPU, so that a clock stuck at zero cannot pass.
        let start = self_cpu_seconds();
        let mut x = 0u64;
        while self_cpu_seconds() - start < 0.02 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let before = self_cpu_seconds();
        let clock = cpu_seconds(std::process::id())?;
        let after = self_cpu_seconds();
        // Both read the kernel's count for this process; getrusage in microseconds.
        assert!(
            before - 1e-3 <= clock && clock <= after + 1e-3,
            "{before} <= {clock} <= {after}"
        );
        Ok(())
    }

    #[test]
    fn a_process_that_is_gone_has_no_cpu_clock() -> Result<()> {
        let mut child = Command::new("true").spawn()?;
        let pid = child.id();
        child.wait()?;
        let err = cpu_seconds(pid).expect_err("reaped process");
        assert!(err.to_string().contains("no CPU clock"), "{err}");
        Ok(())
    }
}
