//! The code that runs between `fork` and `exec`: the supervisor, the namespace init and the script's last setup.
//!
//! Only async-signal-safe system calls, no allocation, no locks: the parent may be multi-threaded, and after `fork` only
//! the forking thread exists, so any lock another thread held stays locked forever.

use super::{FLAG_NET, FLAG_PID, Limits, MAGIC, TAG_SCRIPT, TAG_SUPERVISOR};
use std::io;

/// Everything the child needs, computed in the parent before `fork`.
#[derive(Clone, Copy)]
pub(super) struct ChildPlan {
    wall_ns: i128,
    memory_bytes: Option<u64>,
    file_bytes: Option<u64>,
    cpu_seconds: Option<u64>,
    affinity: Option<libc::cpu_set_t>,
    status_fd: i32,
    namespaces: bool,
}

impl ChildPlan {
    pub(super) fn new(limits: &Limits, status_fd: i32, namespaces: bool) -> Self {
        let affinity = limits.cpus.and_then(affinity_for);
        let cpus = limits.cpus.unwrap_or(1).max(1) as u64;
        ChildPlan {
            wall_ns: limits.wall.as_nanos() as i128,
            memory_bytes: limits.memory_mb.map(|m| m << 20),
            file_bytes: limits.file_size_mb.map(|m| m << 20),
            cpu_seconds: Some(limits.wall.as_secs().saturating_add(1).saturating_mul(cpus)),
            affinity,
            status_fd,
            namespaces,
        }
    }

    /// Runs in the forked child. Returns `Ok(())` only in the process that is to `exec` the script; the supervisor and
    /// the namespace init never return.
    pub(super) fn enter(&self) -> io::Result<()> {
        // SAFETY (whole function): plain system calls on values we own; see the module docs for why nothing allocates.
        unsafe {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut flags = 0;
            if self.namespaces {
                if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNET) == 0 {
                    flags = FLAG_PID | FLAG_NET;
                } else if libc::unshare(libc::CLONE_NEWNET) == 0 {
                    flags = FLAG_NET;
                }
            }
            if flags & FLAG_PID == 0 {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            }
            let mut chld: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut chld);
            libc::sigaddset(&mut chld, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old);
            let start = now_ns();
            let pid = libc::fork();
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if flags & FLAG_PID != 0 {
                    // Returns only in the script's process; the namespace init stays behind as PID 1.
                    self.namespace_init();
                }
                return self.prepare_script(&old);
            }
            // Supervisor: keep only the status pipe so that the output pipe closes when the script tree is gone.
            close_all_but(self.status_fd);
            let (timed_out, status) = self.supervise(pid, start, &chld);
            if flags & FLAG_PID == 0 {
                kill_descendants();
            }
            write_record(self.status_fd, TAG_SUPERVISOR, flags, timed_out as i32, status);
            if flags & FLAG_PID == 0 {
                // Last sweep: anything still in our process group (we die with it; the record is already written).
                libc::kill(0, libc::SIGKILL);
            }
            libc::_exit(0);
        }
    }

    /// PID 1 of the new namespace: fork the script (the only process that returns), reap every orphan, report the
    /// script's status, exit. The kernel then kills whatever is left in the namespace.
    unsafe fn namespace_init(&self) {
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                return;
            }
            if pid < 0 {
                libc::_exit(126);
            }
            close_all_but(self.status_fd);
            loop {
                let mut st = 0;
                let w = libc::waitpid(-1, &mut st, 0);
                if w == pid {
                    write_record(self.status_fd, TAG_SCRIPT, 0, 0, st);
                    libc::_exit(0);
                }
                if w < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(0);
                }
            }
        }
    }

    /// The script's own process: limits, affinity, and the parent's signal mask restored.
    fn prepare_script(&self, old: &libc::sigset_t) -> io::Result<()> {
        // SAFETY: setrlimit/sched_setaffinity/sigprocmask on stack values.
        unsafe {
            libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
            set_limit(libc::RLIMIT_CORE, 0)?;
            if let Some(b) = self.memory_bytes {
                set_limit(libc::RLIMIT_AS, b)?;
            }
            if let Some(b) = self.file_bytes {
                set_limit(libc::RLIMIT_FSIZE, b)?;
            }
            if let Some(s) = self.cpu_seconds {
                set_limit(libc::RLIMIT_CPU, s)?;
            }
            if let Some(set) = &self.affinity {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
            }
        }
        Ok(())
    }

    /// Wait for `pid` until the deadline; on timeout kill it. Returns (timed out, raw wait status).
    unsafe fn supervise(&self, pid: i32, start: i128, chld: &libc::sigset_t) -> (bool, i32) {
        unsafe {
            loop {
                // Reap our child and, as a subreaper, any re-parented orphan that has exited.
                loop {
                    let mut st = 0;
                    let w = libc::waitpid(-1, &mut st, libc::WNOHANG);
                    if w == pid {
                        return (false, st);
                    }
                    if w <= 0 {
                        break;
                    }
                }
                let left = self.wall_ns - (now_ns() - start);
                if left <= 0 {
                    libc::kill(pid, libc::SIGKILL);
                    let mut st = 0;
                    while libc::waitpid(pid, &mut st, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
                    return (true, st);
                }
                let ts = libc::timespec {
                    tv_sec: (left / 1_000_000_000) as libc::time_t,
                    tv_nsec: (left % 1_000_000_000) as libc::c_long,
                };
                libc::sigtimedwait(chld, std::ptr::null_mut(), &ts);
            }
        }
    }
}

fn now_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

unsafe fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit reads the struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn close_all_but(fd: i32) {
    // SAFETY: close_range only closes descriptors of this (single-threaded, forked) process.
    unsafe {
        if fd > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
    }
}

fn write_record(fd: i32, tag: i32, flags: i32, timed_out: i32, status: i32) {
    let words = [MAGIC, tag, flags, timed_out, status];
    // SAFETY: writes 20 bytes from a stack array; under PIPE_BUF, so the write is atomic.
    unsafe { libc::write(fd, words.as_ptr().cast(), std::mem::size_of_val(&words)) };
}

/// Kill every descendant of this subreaper: kill the current children, reap them (their own children are re-parented to
/// us), repeat until there are none.
fn kill_descendants() {
    let mut path = [0u8; 64];
    // SAFETY: getpid, open/read/close on a stack buffer, kill and waitpid.
    unsafe {
        let me = libc::getpid();
        let n = write_proc_children_path(&mut path, me);
        path[n] = 0;
        for _ in 0..10_000 {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return;
            }
            let mut buf = [0u8; 4096];
            let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            let mut any = false;
            let mut cur: i32 = 0;
            let mut in_num = false;
            for &b in &buf[..len.max(0) as usize] {
                if b.is_ascii_digit() {
                    cur = cur * 10 + (b - b'0') as i32;
                    in_num = true;
                } else if in_num {
                    libc::kill(cur, libc::SIGKILL);
                    any = true;
                    cur = 0;
                    in_num = false;
                }
            }
            if in_num {
                libc::kill(cur, libc::SIGKILL);
                any = true;
            }
            // Reap whatever has died; block only while someone is left to reap.
            let mut st = 0;
            while libc::waitpid(-1, &mut st, if any { 0 } else { libc::WNOHANG }) > 0 {}
            if !any {
                return;
            }
        }
    }
}

/// Writes `/proc/self/task/<pid>/children` into `buf`, returns its length.
fn write_proc_children_path(buf: &mut [u8; 64], pid: i32) -> usize {
    let mut n = 0;
    for &b in b"/proc/self/task/" {
        buf[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 12];
    let (mut d, mut v) = (0, pid.max(0) as u32);
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    for &b in b"/children" {
        buf[n] = b;
        n += 1;
    }
    n
}

/// `n` of the CPUs this process may run on, as an affinity mask. Successive runs start at successive CPUs, so that
/// parallel episodes limited to one CPU each spread over the machine instead of all sharing the first CPU.
fn affinity_for(n: usize) -> Option<libc::cpu_set_t> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    // SAFETY: sched_getaffinity fills the set; CPU_* macros read and write it.
    unsafe {
        let mut current: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut current) != 0 {
            return None;
        }
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &current)).collect();
        if allowed.is_empty() || n >= allowed.len() {
            return None;
        }
        let start = NEXT.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for i in 0..n {
            libc::CPU_SET(allowed[(start + i) % allowed.len()], &mut set);
        }
        Some(set)
    }
}
