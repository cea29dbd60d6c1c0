//! The scripted expert: an offline policy that works through its ideas like a careful engineer would.
//!
//! Per episode it lists the files, inspects the starter, sometimes asks for a summary of the training data, runs the
//! starter for a baseline, then for each idea has `train.py` rewritten to implement it (Edit Script (AI) with the idea's
//! words as the instruction, which the offline editor [`crate::ideas::editor`] turns into the code of
//! [`crate::ideas::program`]; Write File with that code when the editor would not make exactly this change), executes
//! it and reads the metric from the observation. An improvement is kept and,
//! sometimes, tuned once more (a neighbouring hyperparameter); a regression is undone (Undo Edit Script); a crash or
//! timeout gets one simpler, faster retry and is undone if that fails too. Before Final Answer it re-runs the kept
//! script when the last submission came from an undone one. Nothing is faked: every metric comes from a real run, and
//! failures stay in the trajectory. Choices (how many ideas, whether to inspect the data or tune) come from a
//! SplitMix64 stream seeded by the collection seed and the episode id, so a seed fixes the trajectory.

use super::{observed_metric, response};
use crate::ideas::adapters::{self, Adapter};
use crate::ideas::{Idea, IdeaError, Plan, editor, program};
use crate::metric::Direction;
use crate::policy::{Policy, PolicyError, Prompt};
use crate::rng::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the expert did last (how to read the observation it now sees).
#[derive(Debug, Clone, PartialEq)]
enum Last {
    Start,
    Listed,
    Inspected,
    Understood,
    RanBaseline,
    Wrote { idea: usize, tuned: bool, fixed: bool },
    Ran { idea: usize, tuned: bool, fixed: bool },
    Undid,
    Reran,
    Finished,
}

/// One episode's memory.
#[derive(Debug)]
struct Memory {
    rng: Rng,
    ideas: Vec<Idea>,
    task: String,
    adapter: &'static Adapter,
    last: Last,
    /// The plan currently in train.py (None: the starter).
    current: Option<(Plan, String)>,
    /// Plans written since the kept version (undone one by one).
    stack: Vec<Option<(Plan, String)>>,
    best: Option<f64>,
    baseline: Option<f64>,
    /// The last graded submission came from a script that was since undone.
    stale_submission: bool,
    next_idea: usize,
    log: Vec<String>,
}

/// The offline scripted expert (see the module docs).
pub struct ScriptedExpert {
    seed: u64,
    memory: Mutex<HashMap<String, Memory>>,
}

impl ScriptedExpert {
    /// An expert whose choices are fixed by `seed` (and each episode's id).
    pub fn new(seed: u64) -> Self {
        ScriptedExpert { seed, memory: Mutex::new(HashMap::new()) }
    }
}

fn better(direction: Direction, new: f64, old: Option<f64>) -> bool {
    match (old, direction) {
        (None, _) => true,
        (Some(o), Direction::Maximize) => new > o + 1e-12,
        (Some(o), Direction::Minimize) => new < o - 1e-12,
    }
}

/// A neighbouring hyperparameter setting of the plan's model (up or down by a coin), with words for it.
fn tuned(plan: &Plan, rng: &mut Rng) -> Option<(Plan, String)> {
    let up = rng.chance(0.5);
    let mut options = editor::tunings(plan);
    if options.is_empty() {
        return None;
    }
    Some(options.swap_remove(if up || options.len() == 1 { 0 } else { 1 }))
}

/// The last non-empty lines of a failed run's output.
fn error_tail(observation: &str) -> String {
    let lines: Vec<&str> = observation.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(2)..].join(" / ")
}

impl Memory {
    /// Change train.py to `plan`, described by `summary`: through Edit Script (AI) with `summary` as the instruction
    /// when the offline editor turns it into exactly this plan (a short action), else with Write File and the
    /// complete program.
    fn write(&mut self, idea: usize, plan: Plan, summary: String, thought: String, tuned: bool, fixed: bool) -> Result<String, IdeaError> {
        let by_editor = editor::edit(&self.task, &summary).is_ok_and(|e| e.change.plan == plan && e.change.text == summary);
        let action = if by_editor {
            response(
                &thought,
                "Edit Script (AI)",
                &[("script_name", json!("train.py")), ("edit_instruction", json!(summary)), ("save_name", json!("train.py"))],
            )
        } else {
            let code = program::program(self.adapter, &plan, &summary)?;
            response(&thought, "Write File", &[("file_name", json!("train.py")), ("content", json!(code))])
        };
        self.stack.push(self.current.take());
        self.current = Some((plan, summary));
        self.last = Last::Wrote { idea, tuned, fixed };
        Ok(action)
    }

    /// Start the next idea, or wrap up.
    fn next(&mut self, direction: Direction) -> Result<String, IdeaError> {
        if self.next_idea < self.ideas.len() {
            let i = self.next_idea;
            self.next_idea += 1;
            let idea = self.ideas[i].clone();
            let plan = idea.plan.clone().ok_or_else(|| IdeaError::Plan {
                task: idea.task.clone(),
                message: format!("idea {} has no plan; the scripted expert needs generated ideas", idea.id),
            })?;
            let thought = self.rng.pick(&[
                "Next I will try a new idea: the editor rewrites train.py, then I run it.",
                "Let me implement the next idea in train.py and then run it.",
                "Now I will change train.py to try another idea.",
            ]);
            return self.write(i, plan, idea.text.clone(), thought.to_string(), false, false);
        }
        if self.stale_submission {
            self.last = Last::Reran;
            return Ok(response(
                "The last submission came from a script I undid. Re-run the kept train.py so submission.csv matches \
                 the best version before finishing.",
                "Execute Script",
                &[("script_name", json!("train.py"))],
            ));
        }
        self.finish(direction)
    }

    fn finish(&mut self, _direction: Direction) -> Result<String, IdeaError> {
        self.last = Last::Finished;
        let kept = self.current.as_ref().map_or("the unchanged starter script".to_string(), |(_, s)| short(s));
        let best = self.best.map_or("no graded run".into(), |b| format!("{b:.6}"));
        let base = self.baseline.map_or("unknown".into(), |b| format!("{b:.6}"));
        let summary = format!(
            "Baseline {base}; best {best}. Kept: {kept} Tried: {}.",
            if self.log.is_empty() { "nothing".to_string() } else { self.log.join("; ") }
        );
        Ok(response(
            "I have tried my ideas and submission.csv holds the predictions of the best script. I will submit.",
            "Final Answer",
            &[("final_answer", json!(summary))],
        ))
    }

    fn act(&mut self, obs: &str, direction: Direction) -> Result<String, IdeaError> {
        match self.last.clone() {
            Last::Start => {
                self.last = Last::Listed;
                Ok(response(
                    "First I need to see which files are available in the work folder.",
                    "List Files",
                    &[("dir_path", json!("."))],
                ))
            }
            Last::Listed => {
                self.last = Last::Inspected;
                Ok(response(
                    "There is a starter script train.py. Let me read it to understand the baseline and the submission \
                     format.",
                    "Inspect Script Lines",
                    &[("script_name", json!("train.py")), ("start_line_number", json!(1)), ("end_line_number", json!(100))],
                ))
            }
            Last::Inspected if self.rng.chance(0.5) => {
                self.last = Last::Understood;
                Ok(response(
                    "Before changing the model I want to know the columns and value ranges of the training data.",
                    "Understand File",
                    &[("file_name", json!("train.csv")), ("things_to_look_for", json!("the columns, the target and typical values"))],
                ))
            }
            Last::Inspected | Last::Understood => {
                self.last = Last::RanBaseline;
                Ok(response(
                    "I will run the starter as it is to get the baseline metric.",
                    "Execute Script",
                    &[("script_name", json!("train.py"))],
                ))
            }
            Last::RanBaseline => {
                self.baseline = observed_metric(obs);
                self.best = self.baseline;
                self.next(direction)
            }
            Last::Wrote { idea, tuned, fixed } => {
                self.last = Last::Ran { idea, tuned, fixed };
                Ok(response(
                    "train.py is changed. Execute it to see the metric.",
                    "Execute Script",
                    &[("script_name", json!("train.py"))],
                ))
            }
            Last::Ran { idea, tuned: was_tuned, fixed } => {
                let name = self.current.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
                match observed_metric(obs).filter(|_| obs.contains("Submission graded:")) {
                    Some(m) if better(direction, m, self.best) => {
                        self.log.push(format!("{} -> {m:.6} (kept)", short(&name)));
                        let prev = self.best.map_or("none".into(), |b| format!("{b:.6}"));
                        self.best = Some(m);
                        self.stack.clear();
                        self.stale_submission = false;
                        if !was_tuned && !fixed && self.rng.chance(0.6) {
                            let plan = self.current.as_ref().map(|(p, _)| p.clone()).expect("a plan was written");
                            if let Some((plan2, words)) = tuned(&plan, &mut self.rng) {
                                let summary = editor::tuned_text(&name, &words);
                                let thought = format!(
                                    "The metric improved from {prev} to {m:.6}. Let me see whether a neighbouring \
                                     setting helps further: {words}."
                                );
                                return self.write(idea, plan2, summary, thought, true, false);
                            }
                        }
                        self.next(direction)
                    }
                    Some(m) => {
                        self.log.push(format!("{} -> {m:.6} (undone)", short(&name)));
                        self.stale_submission = true;
                        self.last = Last::Undid;
                        let best = self.best.map_or("the previous".into(), |b| format!("{b:.6}"));
                        Ok(response(
                            &format!("The metric {m:.6} is not better than {best}. I will undo this edit of train.py."),
                            "Undo Edit Script",
                            &[("script_name", json!("train.py"))],
                        ))
                    }
                    None if !fixed && !was_tuned => {
                        let plan = self.current.as_ref().map(|(p, _)| p.clone()).expect("a plan was written");
                        let (plan2, words) = editor::simplified(&plan);
                        let summary = editor::simplified_text(&name, &words);
                        let thought = format!(
                            "The run did not produce a graded submission ({}). I will make the script simpler and faster.",
                            short(&error_tail(obs))
                        );
                        self.write(idea, plan2, summary, thought, false, true)
                    }
                    None => {
                        self.log.push(format!("{} -> failed (undone)", short(&name)));
                        self.last = Last::Undid;
                        Ok(response(
                            &format!("This variant failed too ({}). Undo the edit and move on.", error_tail(obs)),
                            "Undo Edit Script",
                            &[("script_name", json!("train.py"))],
                        ))
                    }
                }
            }
            Last::Undid => {
                self.current = self.stack.pop().flatten();
                if !self.stack.is_empty() {
                    self.last = Last::Undid;
                    return Ok(response(
                        "One more undo restores the best version of train.py.",
                        "Undo Edit Script",
                        &[("script_name", json!("train.py"))],
                    ));
                }
                self.next(direction)
            }
            Last::Reran => {
                self.stale_submission = false;
                if let Some(m) = observed_metric(obs).filter(|_| obs.contains("Submission graded:")) {
                    self.best = Some(m);
                }
                self.finish(direction)
            }
            Last::Finished => self.finish(direction),
        }
    }
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(80).collect();
    if text.chars().count() > 80 { format!("{t}...") } else { t }
}

impl Policy for ScriptedExpert {
    fn respond(&self, prompts: &[Prompt]) -> Result<Vec<String>, PolicyError> {
        let mut memory = self.memory.lock().expect("expert memory lock");
        prompts
            .iter()
            .map(|p| {
                if p.state.step == 0 || !memory.contains_key(&p.episode) {
                    let adapter = adapters::adapter(&p.state.task)
                        .ok_or_else(|| IdeaError::NoGenerator(p.state.task.clone()))?;
                    memory.insert(
                        p.episode.clone(),
                        Memory {
                            rng: Rng::new(self.seed, &format!("expert/{}", p.episode)),
                            ideas: p.ideas.clone(),
                            task: p.state.task.clone(),
                            adapter,
                            last: Last::Start,
                            current: None,
                            stack: Vec::new(),
                            best: None,
                            baseline: None,
                            stale_submission: false,
                            next_idea: 0,
                            log: Vec::new(),
                        },
                    );
                }
                let m = memory.get_mut(&p.episode).expect("inserted");
                let obs = p.state.history.last().map_or("", |e| e.observation.as_str());
                Ok(m.act(obs, p.state.direction)?)
            })
            .collect()
    }

    fn end_episode(&self, episode: &str) {
        self.memory.lock().expect("expert memory lock").remove(episode);
    }
}
