//! Child processes and their CPU time.
//!
//! The callout and the null responder run as children of the benchmark (the benchmark
//! binary re-executes itself with a hidden subcommand), so that their CPU time can be
//! read from `/proc/<pid>/stat` separately from nats-server's and from the load
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
/// ones that have exited). Resolution: one clock tick (10 ms with `CLK_TCK` = 100), so
/// measurements use enough connects that the total is hundreds of ticks.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count
    // fields from after its closing parenthesis, where field 3 (state) is index 0.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat number")? as f64)
    };
    // utime is field 14 and stime field 15 (1-based), i.e. indices 11 and 12 here.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(total / if hz > 0 { hz as f64 } else { 100.0 })
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
