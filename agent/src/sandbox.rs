//! Run one command in a sandbox: the child process behind Execute Script.
//!
//! MLAgentBench runs scripts with `subprocess.Popen(shell=True)` in the agent's own process group and no timeout; a script
//! that forks a daemon or loops forever outlives the episode. Here every run is a tree of three processes:
//!
//! ```text
//! parent (this process)
//!  └─ supervisor  own session; new PID + network namespace when allowed, else a child subreaper; enforces the deadline
//!      └─ [init]  only with a PID namespace: PID 1 of the namespace, reaps orphans, reports the script's status
//!          └─ script  rlimits (address space, file size, CPU time, no core), CPU affinity, scrubbed environment
//! ```
//!
//! When the script exits or the wall clock runs out, every descendant dies, including ones that called `setsid`: with a
//! PID namespace the kernel kills the whole namespace when its init exits; without one the supervisor, being the
//! subreaper every orphan is re-parented to, kills its children until none are left, then its process group. The parent
//! never changes its own working directory, signal handlers or alarms, so many sandboxes can run from one process at once.
//!
//! Everything between `fork` and `exec` uses only async-signal-safe system calls and no allocation.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Resource limits of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time before the whole process tree is killed.
    pub wall: Duration,
    /// Address-space limit (`RLIMIT_AS`) in MiB; `None` leaves it unlimited.
    pub memory_mb: Option<u64>,
    /// Largest file the script may write (`RLIMIT_FSIZE`) in MiB.
    pub file_size_mb: Option<u64>,
    /// CPUs the script may run on (affinity and `*_NUM_THREADS`); also bounds CPU time to `wall × cpus`.
    pub cpus: Option<usize>,
    /// Most characters of combined stdout+stderr kept (head and tail halves).
    pub output_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { wall: Duration::from_secs(60), memory_mb: Some(4096), file_size_mb: Some(512), cpus: Some(1), output_chars: 10_000 }
    }
}

/// How the script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Normal exit with this code.
    Exited(i32),
    /// Killed by this signal (not by the timeout).
    Signaled(i32),
    /// The wall-clock limit was reached and the tree was killed.
    TimedOut,
}

/// Which isolation the kernel granted this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Isolation {
    /// The script ran in a new PID namespace.
    pub pid_namespace: bool,
    /// The script ran in a new network namespace (no network).
    pub net_namespace: bool,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// How the script ended.
    pub termination: Termination,
    /// Combined stdout and stderr, at most `output_chars` characters plus an omission marker.
    pub output: String,
    /// Bytes of output produced in total.
    pub output_bytes: u64,
    /// Wall-clock time from spawn to the last process's exit.
    pub duration: Duration,
    /// The isolation that was in effect.
    pub isolation: Isolation,
}

impl RunOutput {
    /// Whether the run looks like it ran out of memory: a failure whose output reports an allocation failure.
    pub fn memory_exhausted(&self) -> bool {
        let failed = !matches!(self.termination, Termination::Exited(0) | Termination::TimedOut);
        const SIGNS: [&str; 5] = ["MemoryError", "Cannot allocate memory", "bad_alloc", "out of memory", "OutOfMemory"];
        failed && SIGNS.iter().any(|s| self.output.contains(s))
    }
}

/// Setting up a run failed (the script's own failures are a [`RunOutput`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The program could not be started (not found, not executable, bad working directory).
    #[error("cannot start `{program}` in {cwd}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Its working directory.
        cwd: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A pipe could not be created.
    #[error("cannot create a pipe: {0}")]
    Pipe(std::io::Error),
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The program (looked up on the given `PATH`) and its arguments; no shell is involved.
    pub argv: &'a [String],
    /// Working directory.
    pub cwd: &'a Path,
    /// The complete environment (nothing is inherited).
    pub env: &'a [(String, String)],
    /// Limits.
    pub limits: &'a Limits,
    /// Try PID and network namespaces (needs CAP_SYS_ADMIN); without them the run still works, with network.
    pub namespaces: bool,
}

const MAGIC: i32 = 0x5a_4e_44;
const TAG_SCRIPT: i32 = 1;
const TAG_SUPERVISOR: i32 = 2;
const FLAG_PID: i32 = 1;
const FLAG_NET: i32 = 2;

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(SandboxError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Run `req` to completion under its limits.
pub fn run(req: &Request<'_>) -> Result<RunOutput, SandboxError> {
    use std::os::fd::AsRawFd;
    let (status_r, status_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let out_w2 = out_w.try_clone().map_err(SandboxError::Pipe)?;
    let plan = ChildPlan::new(req.limits, status_w.as_raw_fd(), req.namespaces);
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .current_dir(req.cwd)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    // SAFETY: the closure only makes async-signal-safe system calls and does not allocate (see `ChildPlan::enter`).
    unsafe {
        cmd.pre_exec(move || plan.enter());
    }
    let start = Instant::now();
    let spawned = cmd.spawn();
    // Drop our copies of the write ends so that EOF means every process holding them has exited.
    drop(cmd);
    drop(status_w);
    let child = spawned.map_err(|source| SandboxError::Spawn {
        program: req.argv[0].clone(),
        cwd: req.cwd.to_path_buf(),
        source,
    })?;
    let pid = child.id() as i32;

    // Read the output on this thread (EOF means every process holding the pipe has exited), then reap the supervisor.
    // A watchdog thread is only a backstop should the supervisor ever hang; it is off the critical path.
    let backstop = req.limits.wall + Duration::from_secs(10);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(backstop) {
            // SAFETY: kill has no memory effects; the supervisor leads its own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    });
    let (output, output_bytes) = read_capped(std::fs::File::from(out_r), req.limits.output_chars.max(2));
    let mut child = child;
    let _ = child.wait();
    drop(done_tx);
    let duration = start.elapsed();

    let mut record = Vec::new();
    let _ = std::fs::File::from(status_r).read_to_end(&mut record);
    let (mut script_status, mut supervisor) = (None, None);
    for chunk in record.chunks_exact(20) {
        let v: Vec<i32> = chunk.chunks_exact(4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect();
        if v[0] == MAGIC && v[1] == TAG_SCRIPT {
            script_status = Some(v[4]);
        } else if v[0] == MAGIC && v[1] == TAG_SUPERVISOR {
            supervisor = Some((v[2], v[3] != 0, v[4]));
        }
    }
    let (flags, timed_out, child_status) = supervisor.unwrap_or((0, true, 0));
    let raw = script_status.unwrap_or(child_status);
    let termination = if timed_out {
        Termination::TimedOut
    } else if libc::WIFEXITED(raw) {
        Termination::Exited(libc::WEXITSTATUS(raw))
    } else {
        Termination::Signaled(libc::WTERMSIG(raw))
    };
    let isolation = Isolation { pid_namespace: flags & FLAG_PID != 0, net_namespace: flags & FLAG_NET != 0 };
    if req.namespaces && !isolation.net_namespace {
        warn_once_no_netns();
    }
    Ok(RunOutput { termination, output, output_bytes, duration, isolation })
}

fn warn_once_no_netns() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!("cannot create a network namespace (needs CAP_SYS_ADMIN): scripts run with network access");
    });
}

/// Read everything from `r`, keeping the first and last `cap / 2` bytes; returns the text and the total byte count.
fn read_capped(mut r: impl Read, cap: usize) -> (String, u64) {
    let half = cap / 2;
    let mut head = Vec::with_capacity(half.min(1 << 16));
    let mut tail = std::collections::VecDeque::with_capacity(half.min(1 << 16));
    let mut total = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        total += n as u64;
        let mut chunk = &buf[..n];
        if head.len() < half {
            let take = (half - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        for &b in chunk {
            if tail.len() == half {
                tail.pop_front();
            }
            tail.push_back(b);
        }
    }
    let omitted = total - head.len() as u64 - tail.len() as u64;
    let mut text = String::from_utf8_lossy(&head).into_owned();
    if omitted > 0 {
        text.push_str(&format!("\n... [{omitted} bytes of output omitted] ...\n"));
    }
    let tail: Vec<u8> = tail.into_iter().collect();
    text.push_str(&String::from_utf8_lossy(&tail));
    (text, total)
}

mod child;
use child::ChildPlan;

#[cfg(test)]
mod tests;
