//! Sandbox tests: exit codes, timeout with process-tree kill (setsid grandchildren included), output cap, memory and
//! file-size limits, scrubbed environment.

use super::*;

fn env() -> Vec<(String, String)> {
    vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]
}

fn sh(script: &str, limits: &Limits, namespaces: bool) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    run(&Request { argv: &argv, cwd: dir.path(), env: &env(), limits, namespaces }).unwrap()
}

fn quick(wall_ms: u64) -> Limits {
    Limits { wall: Duration::from_millis(wall_ms), ..Limits::default() }
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; treat state Z as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn exit_codes_and_output_are_reported() {
    for ns in [false, true] {
        let out = sh("echo hello; echo oops >&2; exit 3", &quick(5_000), ns);
        assert_eq!(out.termination, Termination::Exited(3));
        assert!(out.output.contains("hello") && out.output.contains("oops"), "{}", out.output);
        let out = sh("kill -SEGV $$", &quick(5_000), ns);
        assert_eq!(out.termination, Termination::Signaled(libc::SIGSEGV), "ns={ns}");
    }
}

#[test]
fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let argv = vec!["definitely-not-a-program-xyz".to_string()];
    let e = run(&Request { argv: &argv, cwd: dir.path(), env: &env(), limits: &quick(1000), namespaces: false });
    assert!(e.unwrap_err().to_string().contains("definitely-not-a-program-xyz"));
}

/// The timeout kills the script and a grandchild that escaped into its own session; run in both modes (namespace and
/// subreaper), the pid file tells us the grandchild's pid as seen from outside.
#[test]
fn timeout_kills_the_whole_tree_including_setsid_grandchildren() {
    for ns in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The grandchild writes its host pid (from /proc/self/stat field 1 as seen through the host /proc) and sleeps.
        let script = format!(
            "setsid sh -c 'read -r a _ < /proc/self/stat; echo $a > {p}; exec sleep 30' & sleep 30",
            p = pidfile.display()
        );
        let t0 = Instant::now();
        let out = sh(&script, &quick(700), ns);
        assert_eq!(out.termination, Termination::TimedOut, "ns={ns}");
        assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(pid), "grandchild {pid} survived (ns={ns})");
    }
}

/// A daemon left behind by a script that exits normally is killed too.
#[test]
fn background_children_die_when_the_script_exits() {
    for ns in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "setsid sh -c 'read -r a _ < /proc/self/stat; echo $a > {p}; exec sleep 30' > /dev/null 2>&1 & sleep 0.2; exit 0",
            p = pidfile.display()
        );
        let out = sh(&script, &quick(10_000), ns);
        assert_eq!(out.termination, Termination::Exited(0));
        assert!(out.duration < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(pid), "daemon {pid} survived (ns={ns})");
    }
}

#[test]
fn output_is_capped_keeping_head_and_tail() {
    let limits = Limits { output_chars: 1000, ..quick(10_000) };
    let out = sh("echo FIRST; i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; echo LAST", &limits, false);
    assert!(out.output.starts_with("FIRST"), "{}", &out.output[..50]);
    assert!(out.output.trim_end().ends_with("LAST"));
    assert!(out.output.contains("bytes of output omitted"));
    assert!(out.output.chars().count() <= 1100, "{}", out.output.len());
    assert!(out.output_bytes > 10_000);
}

#[test]
fn memory_limit_stops_large_allocations() {
    if std::process::Command::new("python3").arg("-c").arg("1").status().map(|s| !s.success()).unwrap_or(true) {
        eprintln!("python3 not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> =
        ["python3", "-c", "x = bytearray(1024 * 1024 * 1024); print('allocated')"].map(String::from).to_vec();
    let limits = Limits { memory_mb: Some(256), ..quick(20_000) };
    let out = run(&Request { argv: &argv, cwd: dir.path(), env: &env(), limits: &limits, namespaces: true }).unwrap();
    assert!(out.memory_exhausted(), "{:?} {}", out.termination, out.output);
    assert!(!out.output.contains("allocated"));
}

#[test]
fn file_size_limit_and_scrubbed_environment() {
    let limits = Limits { file_size_mb: Some(1), ..quick(10_000) };
    let out = sh("head -c 3000000 /dev/zero > big; ls -l big; echo SECRET=${SECRET:-unset}", &limits, false);
    assert!(out.output.contains("SECRET=unset"), "{}", out.output);
    // The shell reports "File too large" (SIGXFSZ kills head); the file stops at 1 MiB.
    assert!(out.output.contains("1048576"), "{}", out.output);
}

#[test]
fn network_namespace_has_no_route_when_granted() {
    let out = sh("cat /proc/net/dev | wc -l", &quick(5_000), true);
    if out.isolation.net_namespace {
        // Header (2 lines) plus loopback only.
        assert_eq!(out.output.trim(), "3", "{}", out.output);
    }
}
