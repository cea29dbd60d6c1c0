//! `mlagent demo`: ML-Agent end to end on the embedded default, on one machine.

use super::eval::{Job, task_names, write_report};
use anyhow::{Context, Result};
use clap::{Args as ClapArgs, FromArgMatches, Parser};
use mlagent_agent::episode::EpisodeConfig;
use mlagent_agent::suite::{self, DEFAULT_SEED};
use mlagent_engine::{DeviceKind, SamplingParams};
use mlagent_train::episodes::GenConfig;
use mlagent_train::eval::{EvalConfig, EvalReport};
use std::path::PathBuf;
use std::time::Instant;

/// Run ML-Agent end to end on the tiny preset: init the model → collect expert trajectories with
/// the scripted expert and diverse ideas → SFT → step-wise PPO → evaluate the base, SFT and RL
/// models side by side on the 10 held-out tasks.
///
/// After SFT, the base and SFT models also take one greedy action on states of expert trajectories
/// collected with another seed (not trained on), scored in the environment.
///
/// Writes DIR/report.md (tables, settings, seeds, wall times), DIR/heldout.png (relative gain
/// per task and model), the stages' own outputs (DIR/data, DIR/data-heldout-states, DIR/sft,
/// DIR/rl with curves.png, DIR/eval-{base,sft,rl}) and, as the last line of stdout, a JSON summary:
/// {"valid_action_rate": {"base", "sft", "rl"}, "heldout": {"avg_relative_gain": {...}}, "minutes"}.
/// DIR's stage folders are replaced; the model in DIR/base is reused when present.
///
/// --quick is sized to finish in a few minutes on 2 CPU cores (2.3 to 9 measured); without it the run uses more
/// data, longer prompts and more steps (hours on a CPU).
///
/// Example: mlagent demo --quick --out out/demo --format json
#[derive(clap::Args)]
pub struct Args {
    /// Working directory.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// The small configuration (a few minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Summary on stdout: text (the report) or json (the report's path, then one JSON line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Seed of every stage (model init, collection, SFT order, RL, evaluation sampling).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend for SFT, RL and evaluation: cpu, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
}

/// The sizes of one demo configuration.
#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    trajectories_per_task: usize,
    collect_max_steps: usize,
    sft_cutoff: usize,
    sft_epochs: usize,
    sft_batch_size: usize,
    sft_grad_accum: usize,
    sft_lr: f64,
    sft_warmup: usize,
    sft_max_steps: Option<usize>,
    rl_iterations: usize,
    rl_batch: usize,
    rl_temperature: f32,
    rl_critic_warmup: usize,
    rl_actor_lr: f64,
    rl_critic_lr: f64,
    max_new_tokens: usize,
    eval_states: usize,
    eval_k: usize,
    eval_max_steps: usize,
    eval_temperature: f32,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                trajectories_per_task: 2,
                collect_max_steps: 12,
                sft_cutoff: 640,
                sft_epochs: 4,
                sft_batch_size: 1,
                sft_grad_accum: 1,
                sft_lr: 2e-3,
                sft_warmup: 10,
                sft_max_steps: None,
                rl_iterations: 6,
                rl_batch: 8,
                rl_temperature: 0.7,
                rl_critic_warmup: 2,
                rl_actor_lr: 1e-5,
                rl_critic_lr: 5e-4,
                max_new_tokens: 256,
                eval_states: 36,
                eval_k: 1,
                eval_max_steps: 3,
                eval_temperature: 0.0,
            }
        } else {
            Plan {
                trajectories_per_task: 4,
                collect_max_steps: 30,
                sft_cutoff: 2048,
                sft_epochs: 3,
                sft_batch_size: 4,
                sft_grad_accum: 2,
                sft_lr: 1e-3,
                sft_warmup: 10,
                sft_max_steps: None,
                rl_iterations: 20,
                rl_batch: 8,
                rl_temperature: 0.7,
                rl_critic_warmup: 4,
                rl_actor_lr: 1e-5,
                rl_critic_lr: 2e-4,
                max_new_tokens: 256,
                eval_states: 72,
                eval_k: 3,
                eval_max_steps: 10,
                eval_temperature: 0.7,
            }
        }
    }

    fn max_prompt_tokens(&self) -> usize {
        self.sft_cutoff - self.max_new_tokens
    }
}

/// Parses `argv` as a subcommand's arguments, exactly as the CLI would.
fn parse<A: ClapArgs + FromArgMatches>(name: &str, argv: &[String]) -> Result<A> {
    #[derive(Parser)]
    struct Wrap<T: ClapArgs> {
        #[command(flatten)]
        inner: T,
    }
    let w = Wrap::<A>::try_parse_from(std::iter::once(name.to_string()).chain(argv.iter().cloned()))
        .with_context(|| format!("demo: arguments of {name}"))?;
    Ok(w.inner)
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn stage(n: usize, what: &str) {
    println!("\n=== [{n}/6] {what} ===");
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let plan = Plan::new(args.quick);
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    for d in ["data", "data-heldout-states", "sft", "rl", "eval-base", "eval-sft", "eval-rl"] {
        let p = out.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("{}", p.display()))?;
        }
    }
    let dev = match args.device {
        DeviceKind::Cpu | DeviceKind::CpuNdarray => "cpu".to_string(),
        DeviceKind::Wgpu => "wgpu".into(),
        DeviceKind::Cuda(n) => format!("cuda:{n}"),
    };
    let seed = s(args.seed);
    let mut times: Vec<(&str, f64)> = Vec::new();

    stage(1, "model: the tiny preset");
    let t = Instant::now();
    let base = out.join("base");
    if !base.join("model.safetensors").is_file() {
        super::init_model::init(mlagent_engine::preset::Preset::Tiny, args.seed, &base)?;
    } else {
        println!("reusing {}", base.display());
    }
    times.push(("init model", t.elapsed().as_secs_f64()));

    stage(2, "collect: scripted expert, 100 ideas per task, the 10 most diverse");
    let t = Instant::now();
    let data = out.join("data");
    super::collect::run(parse(
        "collect",
        &[
            s("--tasks"), s("train"),
            s("--trajectories-per-task"), s(plan.trajectories_per_task),
            s("--max-steps"), s(plan.collect_max_steps),
            s("--seed"), seed.clone(),
            s("--out"), s(data.display()),
        ],
    )?)?;
    // Trajectories of other episodes (another seed) for the end-of-SFT check on states not trained on.
    let held = out.join("data-heldout-states");
    if held.exists() {
        std::fs::remove_dir_all(&held).with_context(|| format!("{}", held.display()))?;
    }
    super::collect::run(parse(
        "collect",
        &[
            s("--tasks"), s("train"),
            s("--trajectories-per-task"), s(1),
            s("--max-steps"), s(plan.collect_max_steps),
            s("--seed"), s(args.seed + 1),
            s("--out"), s(held.display()),
        ],
    )?)?;
    times.push(("collect", t.elapsed().as_secs_f64()));

    stage(3, "SFT on the expert steps");
    let t = Instant::now();
    let sft = out.join("sft");
    let mut argv = vec![
        s("--model"), s(base.display()),
        s("--data"), s(data.join("sft_messages.jsonl").display()),
        s("--out"), s(sft.display()),
        s("--cutoff-len"), s(plan.sft_cutoff),
        s("--max-prompt-tokens"), s(plan.max_prompt_tokens()),
        s("--epochs"), s(plan.sft_epochs),
        s("--batch-size"), s(plan.sft_batch_size),
        s("--grad-accum"), s(plan.sft_grad_accum),
        s("--lr"), s(plan.sft_lr),
        s("--warmup"), s(plan.sft_warmup),
        s("--eval-states"), s(held.join("trajectories.jsonl").display()),
        s("--eval-states-count"), s(plan.eval_states),
        s("--eval-max-new-tokens"), s(plan.max_new_tokens),
        s("--eval-base"),
        s("--val-data"), s(held.join("sft_messages.jsonl").display()),
        s("--seed"), seed.clone(),
        s("--device"), dev.clone(),
    ];
    if let Some(m) = plan.sft_max_steps {
        argv.extend([s("--max-steps"), s(m)]);
    }
    super::sft::run(parse("sft", &argv)?)?;
    times.push(("sft", t.elapsed().as_secs_f64()));

    stage(4, "step-wise PPO from the expert states");
    let t = Instant::now();
    let rl = out.join("rl");
    super::rl::run(parse(
        "rl",
        &[
            s("--model"), s(sft.join("model").display()),
            s("--data"), s(data.join("trajectories.jsonl").display()),
            s("--out"), s(rl.display()),
            s("--iterations"), s(plan.rl_iterations),
            s("--batch"), s(plan.rl_batch),
            s("--temperature"), s(plan.rl_temperature),
            s("--critic-warmup"), s(plan.rl_critic_warmup),
            s("--actor-lr"), s(plan.rl_actor_lr),
            s("--critic-lr"), s(plan.rl_critic_lr),
            s("--max-new-tokens"), s(plan.max_new_tokens),
            s("--max-prompt-tokens"), s(plan.max_prompt_tokens()),
            s("--seed"), seed.clone(),
            s("--device"), dev.clone(),
        ],
    )?)?;
    times.push(("rl", t.elapsed().as_secs_f64()));

    stage(5, "evaluate base, SFT and RL on the held-out tasks");
    let names = task_names("heldout")?;
    let tasks = names.iter().map(|n| suite::resolve(n, DEFAULT_SEED).with_context(|| format!("task {n}"))).collect::<Result<Vec<_>>>()?;
    let mut reports: Vec<(&str, EvalReport)> = Vec::new();
    for (label, model) in [("base", base.clone()), ("sft", sft.join("model")), ("rl", rl.join("model"))] {
        let t = Instant::now();
        let dir = out.join(format!("eval-{label}"));
        let job = Job {
            model,
            max_prompt_tokens: plan.max_prompt_tokens(),
            label: label.to_string(),
            cfg: EvalConfig {
                tasks: tasks.clone(),
                k: plan.eval_k,
                max_steps: plan.eval_max_steps,
                generation: GenConfig {
                    sampling: SamplingParams { temperature: plan.eval_temperature, top_k: None, top_p: None },
                    max_new_tokens: plan.max_new_tokens,
                    batch: 10,
                },
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                seed: args.seed,
                episode: EpisodeConfig::default(),
                work: dir.join("episodes"),
            },
        };
        let report = args.device.run(job, false)?;
        write_report(&report, &dir)?;
        println!(
            "{label}: valid actions {:.0}%, held-out avg relative gain {:+.2}% ({:.0} s)",
            100.0 * report.valid_action_rate,
            100.0 * report.avg_relative_gain,
            t.elapsed().as_secs_f64()
        );
        times.push((["eval base", "eval sft", "eval rl"][reports.len()], t.elapsed().as_secs_f64()));
        reports.push((label, report));
    }

    stage(6, "report");
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let png = out.join("heldout.png");
    let groups: Vec<(String, Vec<f64>)> =
        reports.iter().map(|(l, r)| (l.to_string(), r.tasks.iter().map(|t| 100.0 * t.avg_relative_gain).collect())).collect();
    mlagent_train::plot::grouped_bars(&png, "held-out tasks: avg@K relative gain over the starter", "gain %", &names, &groups)?;
    let states: serde_json::Value = std::fs::read_to_string(sft.join("eval_states.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let md = report_markdown(&args, &plan, &reports, &states, &times, minutes);
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("{}", out.join("report.md").display()))?;
    let by = |f: &dyn Fn(&EvalReport) -> f64| {
        serde_json::Value::Object(reports.iter().map(|(l, r)| (l.to_string(), serde_json::json!(f(r)))).collect())
    };
    let summary = serde_json::json!({
        "valid_action_rate": by(&|r| r.valid_action_rate),
        "heldout": {"avg_relative_gain": by(&|r| r.avg_relative_gain), "best_relative_gain": by(&|r| r.best_relative_gain)},
        "sft_heldout_states": {
            "valid_action_rate": {"base": states["base"]["valid_rate"], "sft": states["sft"]["valid_rate"]},
            "mean_reward": {"base": states["base"]["mean_reward"], "sft": states["sft"]["mean_reward"]},
        },
        "minutes": (minutes * 100.0).round() / 100.0,
    });
    if args.format == "json" {
        println!("report: {}", out.join("report.md").display());
    } else {
        println!("{md}");
    }
    println!("{summary}");
    Ok(())
}

fn report_markdown(
    args: &Args,
    plan: &Plan,
    reports: &[(&str, EvalReport)],
    states: &serde_json::Value,
    times: &[(&str, f64)],
    minutes: f64,
) -> String {
    let mut m = String::from("# mlagent demo\n\n");
    m.push_str(&format!(
        "{} configuration, seed {}, device {}, suite seed {DEFAULT_SEED}; {minutes:.1} minutes in all.\n\n",
        if args.quick { "Quick" } else { "Full" },
        args.seed,
        args.device
    ));
    m.push_str("## Held-out tasks (avg@K relative gain over the starter script)\n\n| task | base | sft | rl |\n|---|---:|---:|---:|\n");
    if let Some((_, first)) = reports.first() {
        for (i, t) in first.tasks.iter().enumerate() {
            m.push_str(&format!("| {} |", t.task));
            for (_, r) in reports {
                m.push_str(&format!(" {:+.2}% |", 100.0 * r.tasks[i].avg_relative_gain));
            }
            m.push('\n');
        }
    }
    for (name, f) in [
        ("**mean avg@K gain**", &(|r: &EvalReport| format!("{:+.2}%", 100.0 * r.avg_relative_gain)) as &dyn Fn(&EvalReport) -> String),
        ("**mean best@K gain**", &|r: &EvalReport| format!("{:+.2}%", 100.0 * r.best_relative_gain)),
        ("**valid actions**", &|r: &EvalReport| format!("{:.1}%", 100.0 * r.valid_action_rate)),
        ("graded episodes", &|r: &EvalReport| {
            format!("{}/{}", r.tasks.iter().map(|t| t.graded).sum::<usize>(), r.tasks.iter().map(|t| t.finals.len()).sum::<usize>())
        }),
    ] {
        m.push_str(&format!("| {name} |"));
        for (_, r) in reports {
            m.push_str(&format!(" {} |", f(r)));
        }
        m.push('\n');
    }
    m.push_str("\n![held-out gains](heldout.png)\n\nPer-model tables: `eval-base/eval.md`, `eval-sft/eval.md`, `eval-rl/eval.md`.\n\n");
    m.push_str(&format!(
        "## After SFT: one greedy action on {} states of expert trajectories not trained on\n\n\
         | model | valid actions | mean reward (eq. 6) | kinds |\n|---|---:|---:|---|\n",
        plan.eval_states
    ));
    for label in ["base", "sft"] {
        let r = &states[label];
        m.push_str(&format!(
            "| {label} | {:.1}% | {:.3} | {} |\n",
            100.0 * r["valid_rate"].as_f64().unwrap_or(f64::NAN),
            r["mean_reward"].as_f64().unwrap_or(f64::NAN),
            r["kinds"]
        ));
    }
    m.push_str("\n## Training\n\n- SFT: `sft/metrics.jsonl`, ![sft](sft/curves.png)\n- RL: `rl/metrics.jsonl`, ![rl](rl/curves.png)\n- Expert data: `data/report.md`\n\n");
    m.push_str("## Settings\n\n```json\n");
    m.push_str(&serde_json::to_string_pretty(plan).unwrap_or_default());
    m.push_str("\n```\n\nEvery other setting is the command's default (see `mlagent <command> --help`).\n\n## Wall times\n\n| stage | seconds |\n|---|---:|\n");
    for (stage, secs) in times {
        m.push_str(&format!("| {stage} | {secs:.1} |\n"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_arguments_parse_as_the_cli_would() {
        let a: super::super::rl::Args = parse("rl", &[s("--model"), s("m"), s("--data"), s("d"), s("--out"), s("o")]).unwrap();
        drop(a);
        let e = parse::<super::super::rl::Args>("rl", &[s("--bogus")]).err().unwrap();
        assert!(format!("{e:#}").contains("--bogus"), "{e:#}");
    }
}
