//! `mlagent env bench`: how fast the environment is where step-wise RL needs it to be.
//!
//! Two numbers: steps per second of non-executing actions (parse + action + reward + trace + state save), and the
//! overhead of Execute Script beyond the script's own run time: the median sandboxed step running a no-op script minus
//! the median plain `Command` run of the same script (goal ≤ 20 ms).

use crate::episode::{Episode, EpisodeConfig, EpisodeError};
use crate::task::TaskSpec;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The benchmark's results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Non-executing steps measured.
    pub steps: usize,
    /// Non-executing steps per second.
    pub steps_per_sec: f64,
    /// Median wall time of one non-executing step, ms.
    pub step_median_ms: f64,
    /// Executions measured.
    pub runs: usize,
    /// Median plain run of the no-op script, ms.
    pub plain_run_ms: f64,
    /// Median sandboxed Execute Script step of the same script, ms.
    pub execute_step_ms: f64,
    /// `execute_step_ms − plain_run_ms`.
    pub execute_overhead_ms: f64,
    /// Whether scripts ran in PID and network namespaces.
    pub namespaces: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Run the benchmark on `task` in the episode folder `dir`.
pub fn bench(task: TaskSpec, dir: &Path, steps: usize, runs: usize, config: EpisodeConfig) -> Result<BenchReport, EpisodeError> {
    let (namespaces, cpus) = (config.namespaces, config.cpus);
    let script = task.script.clone();
    let mut ep = Episode::reset(task, dir, config)?;
    let responses = [
        "Thought: look\nAction: List Files\nAction Input: {\"dir_path\": \".\"}".to_string(),
        format!("Action: Inspect Script Lines\nAction Input: {{\"script_name\": \"{script}\", \"start_line_number\": 1, \"end_line_number\": 40}}"),
        format!("Action: Understand File\nAction Input: {{\"file_name\": \"{script}\", \"things_to_look_for\": \"model and features\"}}"),
        "Action: Train Now\nAction Input: {}".to_string(),
    ];
    let mut times = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for i in 0..steps {
        let t = Instant::now();
        ep.step(&responses[i % responses.len()])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = t0.elapsed().as_secs_f64();
    // A no-op script: its own run time is the interpreter's start-up, measured without the sandbox.
    let noop = "Action: Write File\nAction Input: {\"file_name\": \"noop.py\", \"content\": \"pass\\n\"}";
    ep.step(noop)?;
    let work = ep.workspace().work().to_path_buf();
    let argv = ep.task().run_argv("noop.py");
    // The plain run gets the same scrubbed environment, so only the sandbox differs.
    let env = crate::actions::SandboxConfig::scrubbed_env(&work, cpus);
    let mut plain = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let _ = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&work)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output();
        plain.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut exec = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        ep.step("Action: Execute Script\nAction Input: {\"script_name\": \"noop.py\"}")?;
        exec.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (plain_run_ms, execute_step_ms) = (median(plain), median(exec));
    Ok(BenchReport {
        steps,
        steps_per_sec: steps as f64 / total.max(1e-9),
        step_median_ms: median(times),
        runs,
        plain_run_ms,
        execute_step_ms,
        execute_overhead_ms: execute_step_ms - plain_run_ms,
        namespaces,
    })
}
