//! Execute Script and Final Answer: run the task's command in the sandbox, grade `submission.csv`, keep m_t.

use super::{ActionDef, ActionError, Ctx, Outcome, dispatch};
use crate::grade;
use crate::reward::ActionKind;
use crate::sandbox::{self, Request, Termination};
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// Arguments of Execute Script.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    /// The script to run with the task's run command.
    pub script_name: String,
}

/// Execute Script: run a script in the sandbox; a new `submission.csv` is graded.
pub static EXECUTE_SCRIPT: ActionDef = ActionDef {
    name: "Execute Script",
    description: "Use this to execute the python script. The script must already exist. If it writes \
                  submission.csv, the submission is graded and the metric is reported.",
    args: &[("script_name", "[a valid python script name with relative path to current directory if needed]")],
    observation: "[The observation will be output of the script or errors, followed by the metric when a new \
                  submission.csv was graded.]",
    run: |ctx, v| dispatch(ctx, v, execute),
};

/// A one-line statement of a metric for observations.
fn describe(ctx: &Ctx<'_>, m: f64) -> String {
    let better = match ctx.task.direction() {
        crate::metric::Direction::Maximize => "higher is better",
        crate::metric::Direction::Minimize => "lower is better",
    };
    format!("{} ({better}) = {m:.6}", ctx.task.metric)
}

fn submission_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Grade `work/<submission>`; `Ok(None)` when there is no such file.
fn grade_submission(ctx: &Ctx<'_>) -> Result<Option<(f64, u64)>, grade::GradeError> {
    let path = ctx.ws.work().join(&ctx.task.submission);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let m = grade::grade(ctx.task.metric, &ctx.task.answers_path(), &path)?;
    Ok(Some((m, submission_hash(&bytes))))
}

fn execute(ctx: &mut Ctx<'_>, a: ExecuteArgs) -> Result<Outcome, ActionError> {
    let script = ctx.ws.existing_file(&a.script_name)?;
    let rel = ctx.ws.relative(&script);
    let argv = ctx.task.run_argv(&rel);
    let before = std::fs::read(ctx.ws.work().join(&ctx.task.submission)).ok().map(|b| submission_hash(&b));
    let run = sandbox::run(&Request {
        argv: &argv,
        cwd: ctx.ws.work(),
        env: &ctx.sandbox.env,
        limits: &ctx.sandbox.limits,
        namespaces: ctx.sandbox.namespaces,
    })?;
    let mut text = format!("The script has been executed. Here is the output:\n{}", run.output);
    let secs = ctx.sandbox.limits.wall.as_secs_f64();
    match run.termination {
        Termination::TimedOut => {
            text.push_str(&format!(
                "\nThe script timed out after {secs:.0} s and was stopped with all its processes. Make it faster \
                 (smaller model, fewer epochs, a subset of the data)."
            ));
            return Ok(Outcome::new(text, ActionKind::CornerCase));
        }
        _ if run.memory_exhausted() => {
            text.push_str(&format!(
                "\nThe script ran out of memory (limit {} MiB). Use less memory.",
                ctx.sandbox.limits.memory_mb.unwrap_or(0)
            ));
            return Ok(Outcome::new(text, ActionKind::CornerCase));
        }
        Termination::Exited(0) => {}
        Termination::Exited(code) => {
            text.push_str(&format!("\nThe script failed with exit code {code}."));
            return Ok(Outcome::new(text, ActionKind::Error));
        }
        Termination::Signaled(sig) => {
            text.push_str(&format!("\nThe script was killed by signal {sig}."));
            return Ok(Outcome::new(text, ActionKind::Error));
        }
    }
    let t = Instant::now();
    let after = std::fs::read(ctx.ws.work().join(&ctx.task.submission)).ok().map(|b| submission_hash(&b));
    let fresh = after.is_some() && (after != before || after != ctx.progress.last_submission);
    if !fresh {
        let note = if after.is_none() {
            format!("\nNo {} was written; the metric stays {}.", ctx.task.submission, describe(ctx, ctx.progress.m_t))
        } else {
            format!("\n{} is unchanged; the metric stays {}.", ctx.task.submission, describe(ctx, ctx.progress.m_t))
        };
        text.push_str(&note);
        return Ok(Outcome::new(text, ActionKind::NonEdit));
    }
    let graded = grade_submission(ctx);
    let grade_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = match graded {
        Ok(Some((m, hash))) => {
            text.push_str(&format!("\nSubmission graded: {} (previous {:.6}).", describe(ctx, m), ctx.progress.m_t));
            let kind = if ctx.progress.pending_edit { ActionKind::Edit } else { ActionKind::NonEdit };
            ctx.progress.pending_edit = false;
            ctx.progress.last_submission = Some(hash);
            let mut o = Outcome::new(text, kind);
            o.metric = Some(m);
            o
        }
        Ok(None) => Outcome::new(text, ActionKind::NonEdit),
        Err(e) => {
            text.push_str(&format!("\n{} could not be graded: {e}", ctx.task.submission));
            Outcome::new(text, ActionKind::Error)
        }
    };
    out.grade_ms = grade_ms;
    out.changed.push(ctx.ws.work().join(&ctx.task.submission));
    Ok(out)
}

/// Arguments of Final Answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalArgs {
    /// The agent's summary of its solution.
    pub final_answer: String,
}

/// Final Answer: end the episode; the current `submission.csv` is graded.
pub static FINAL_ANSWER: ActionDef = ActionDef {
    name: "Final Answer",
    description: "Use this to provide the final answer to the current task. submission.csv in the work folder is \
                  graded and the episode ends.",
    args: &[("final_answer", "[a detailed description on the final answer]")],
    observation: "[The observation will be the final metric; the episode ends.]",
    run: |ctx, v| dispatch(ctx, v, final_answer),
};

fn final_answer(ctx: &mut Ctx<'_>, a: FinalArgs) -> Result<Outcome, ActionError> {
    let t = Instant::now();
    let graded = grade_submission(ctx);
    let grade_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = match graded {
        Ok(Some((m, _))) => {
            let summary: String = a.final_answer.chars().take(500).collect();
            let mut o = Outcome::new(
                format!("Final answer recorded: {summary}\nFinal {}.", describe(ctx, m)),
                ActionKind::Final,
            );
            o.metric = Some(m);
            o
        }
        Ok(None) => Outcome::new(
            format!("Final answer recorded, but there is no {} to grade.", ctx.task.submission),
            ActionKind::Error,
        ),
        Err(e) => Outcome::new(
            format!("Final answer recorded, but {} could not be graded: {e}", ctx.task.submission),
            ActionKind::Error,
        ),
    };
    out.done = true;
    out.grade_ms = grade_ms;
    Ok(out)
}
