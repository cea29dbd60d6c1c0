use super::*;
use crate::episode::{Episode, EpisodeConfig};
use crate::ideas;
use crate::policy::{Policy, Prompt};
use crate::reward::ActionKind;

#[test]
fn reads_metrics_from_observations() {
    let o = "The script has been executed. Here is the output:\nok\nSubmission graded: accuracy (higher is better) = 0.786000 (previous 0.396000).";
    assert_eq!(observed_metric(o), Some(0.786));
    let o = "\nsubmission.csv is unchanged; the metric stays mae (lower is better) = 25100.769444.";
    assert_eq!(observed_metric(o), Some(25100.769444));
    assert_eq!(observed_metric("Traceback (most recent call last):\nZeroDivisionError"), None);
}

/// A full scripted episode on a real task: every step is a valid action, the ideas' code runs and is graded, the
/// episode ends with Final Answer, and the final submission is the best graded one.
#[test]
fn scripted_episode_runs_ideas_and_keeps_the_best() {
    let task = crate::suite::resolve("spaceship-titanic", crate::suite::DEFAULT_SEED).unwrap();
    let pool = ideas::pool(&task.name).unwrap();
    let picked: Vec<_> = [0usize, 20, 60].iter().map(|&i| pool[i].clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = EpisodeConfig { max_steps: Some(30), namespaces: false, ..Default::default() };
    let mut ep = Episode::reset(task.clone(), dir.path(), config).unwrap();
    let expert = ScriptedExpert::new(7);
    let mut outcomes = Vec::new();
    while !ep.done() {
        let p = Prompt { episode: "e".into(), state: ep.state(), ideas: picked.clone() };
        let r = expert.respond(&[p]).unwrap().remove(0);
        outcomes.push((r.clone(), ep.step(&r).unwrap()));
    }
    assert!(outcomes.iter().all(|(_, o)| o.valid), "{outcomes:#?}");
    let names: Vec<_> = outcomes.iter().map(|(_, o)| o.action.clone().unwrap()).collect();
    assert_eq!(names[0], "List Files");
    assert_eq!(names.last().unwrap(), "Final Answer");
    assert!(names.iter().filter(|n| *n == "Write File").count() >= 3, "{names:?}");
    let graded: Vec<f64> =
        outcomes.iter().filter(|(_, o)| o.action.as_deref() == Some("Execute Script")).filter_map(|(_, o)| o.metric).collect();
    assert!(graded.len() >= 4, "{graded:?}");
    let best = graded.iter().copied().fold(f64::MIN, f64::max);
    let (_, last) = outcomes.last().unwrap();
    assert_eq!(last.kind, ActionKind::Final);
    assert!((last.metric.unwrap() - best).abs() < 1e-12, "final {:?} best {best}", last.metric);
    assert!(best > task.m_init, "no idea beat the starter: {graded:?}");
}
