//! Episode tests: reset, a scripted sequence of steps with their kinds and rewards, persistence across processes
//! (open), and restoring a state from a trace.

use super::*;
use crate::reward::sigmoid;

fn toy_task(dir: &Path) -> TaskSpec {
    let root = dir.join("task");
    std::fs::create_dir_all(root.join("public")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::write(root.join("task.toml"), "name = \"toy\"\nmetric = \"accuracy\"\nm_init = 0.5\nm_best = 1.0\nread_only = [\"test.csv\"]\ntime_limit_secs = 20\n").unwrap();
    std::fs::write(root.join("description.md"), "Label each row a or b.").unwrap();
    std::fs::write(root.join("public/test.csv"), "id,x\n1,0\n2,1\n3,0\n4,1\n").unwrap();
    std::fs::write(
        root.join("public/train.py"),
        "import csv\nrows = list(csv.DictReader(open('test.csv')))\nwith open('submission.csv', 'w') as f:\n    f.write('id,label\\n')\n    for r in rows:\n        f.write(r['id'] + ',a\\n')\n",
    )
    .unwrap();
    std::fs::write(root.join("private/answers.csv"), "id,label\n1,a\n2,b\n3,a\n4,b\n").unwrap();
    TaskSpec::load(&root).unwrap()
}

const BETTER: &str = "Thought: use x\nAction: Write File\nAction Input: {\"file_name\": \"train.py\", \"content\": \"import csv\\nrows = list(csv.DictReader(open('test.csv')))\\nwith open('submission.csv', 'w') as f:\\n    f.write('id,label\\\\n')\\n    for r in rows:\\n        f.write(r['id'] + (',a' if r['x'] == '0' else ',b') + '\\\\n')\\n\"}";
const RUN: &str = "Thought: run it\nAction: Execute Script\nAction Input: {\"script_name\": \"train.py\"}";

#[test]
fn reset_copies_public_files_and_protects_data() {
    let d = tempfile::tempdir().unwrap();
    let ep = Episode::reset(toy_task(d.path()), &d.path().join("ep"), EpisodeConfig::default()).unwrap();
    let work = ep.workspace().work();
    assert!(work.join("train.py").is_file() && work.join("test.csv").is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(work.join("test.csv")).unwrap().permissions().mode() & 0o777, 0o444);
    assert!(!work.join("answers.csv").exists() && !work.parent().unwrap().join("work/../private").exists());
    let obs = ep.observation();
    assert!(obs.contains("Research Problem: Label each row a or b.") && obs.contains("- Execute Script:"));
    assert_eq!(ep.metric(), 0.5);
    // A folder holding something else is refused; an old episode is replaced.
    std::fs::create_dir_all(d.path().join("busy")).unwrap();
    std::fs::write(d.path().join("busy/file"), "x").unwrap();
    assert!(matches!(
        Episode::reset(toy_task(d.path()), &d.path().join("busy"), EpisodeConfig::default()),
        Err(EpisodeError::NotEmpty(_))
    ));
    Episode::reset(toy_task(d.path()), &d.path().join("ep"), EpisodeConfig::default()).unwrap();
}

#[test]
fn a_scripted_episode_gets_the_rewards_of_eq6() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ep");
    let mut ep = Episode::reset(toy_task(d.path()), &dir, EpisodeConfig::default()).unwrap();
    let s = ep.step("I will just think.").unwrap();
    assert_eq!((s.kind, s.valid, s.reward, s.action), (ActionKind::Invalid, false, 0.0, None));
    let s = ep.step("Action: List Files\nAction Input: {\"dir_path\": \".\"}").unwrap();
    assert_eq!((s.kind, s.reward), (ActionKind::NonEdit, 0.5));
    let s = ep.step("Action: List Files\nAction Input: {\"dir_path\": \"..\"}").unwrap();
    assert_eq!((s.kind, s.valid, s.reward), (ActionKind::Error, true, 0.0));
    let s = ep.step(BETTER).unwrap();
    assert_eq!((s.kind, s.reward), (ActionKind::Edit, 0.5), "{}", s.observation);
    // A separate process continues the episode from disk.
    drop(ep);
    let mut ep = Episode::open(&dir).unwrap();
    let s = ep.step(RUN).unwrap();
    assert_eq!((s.kind, s.metric), (ActionKind::Edit, Some(1.0)), "{}", s.observation);
    // α = 100 / |1.0 − 0.5| = 200; Δ = +0.5 → σ(100).
    assert_eq!(s.reward, sigmoid(100.0));
    assert_eq!(ep.metric(), 1.0);
    let s = ep.step("Action: Final Answer\nAction Input: {\"final_answer\": \"rule on x\"}").unwrap();
    assert_eq!((s.kind, s.done, s.reward, s.metric), (ActionKind::Final, true, 0.5, Some(1.0)));
    assert!(matches!(ep.step(RUN), Err(EpisodeError::Done(_))));
    let steps = trace::read(&ep.trace_path()).unwrap();
    assert_eq!(steps.len(), 6);
    assert_eq!(steps[3].snapshots.keys().collect::<Vec<_>>(), vec!["train.py"]);
    assert!(steps[4].snapshots.contains_key("submission.csv"));
    assert_eq!(steps[4].metric_before, 0.5);
    assert!(steps.iter().all(|s| s.durations.total_ms >= s.durations.parse_ms));
    // The prompt shows only the last three steps.
    let state = ep.state();
    assert_eq!(state.history.iter().map(|h| h.index).collect::<Vec<_>>(), vec![3, 4, 5]);
}

#[test]
fn max_steps_end_the_episode() {
    let d = tempfile::tempdir().unwrap();
    let config = EpisodeConfig { max_steps: Some(2), ..EpisodeConfig::default() };
    let mut ep = Episode::reset(toy_task(d.path()), &d.path().join("ep"), config).unwrap();
    assert!(!ep.step("nothing").unwrap().done);
    assert!(ep.step("nothing").unwrap().done);
}

#[test]
fn restore_recreates_the_state_before_a_step() {
    let d = tempfile::tempdir().unwrap();
    let mut ep = Episode::reset(toy_task(d.path()), &d.path().join("ep"), EpisodeConfig::default()).unwrap();
    ep.step(BETTER).unwrap();
    ep.step(RUN).unwrap();
    ep.step("Action: Write File\nAction Input: {\"file_name\": \"train.py\", \"content\": \"raise SystemExit(3)\\n\"}").unwrap();
    ep.step("Action: Final Answer\nAction Input: {\"final_answer\": \"x\"}").unwrap();
    let steps = trace::read(&ep.trace_path()).unwrap();
    let task = ep.task().clone();

    // Before step 2: the improved script, m_t = 1.0, no pending edit.
    let mut r = Episode::restore(task.clone(), &steps, 2, &d.path().join("r2"), EpisodeConfig::default()).unwrap();
    let work = r.workspace().work().to_path_buf();
    assert!(std::fs::read_to_string(work.join("train.py")).unwrap().contains("r['x']"));
    assert_eq!((r.metric(), r.step_index()), (1.0, 2));
    assert!(work.join("submission.csv").is_file());
    assert_eq!(r.state().history.len(), 2);
    // Undo works in the restored episode: the starter comes back.
    let s = r.step("Action: Undo Edit Script\nAction Input: {\"script_name\": \"train.py\"}").unwrap();
    assert_eq!(s.kind, ActionKind::Edit, "{}", s.observation);
    assert!(std::fs::read_to_string(work.join("train.py")).unwrap().contains(",a"));

    // Before step 3 (after the breaking edit): an edit is pending.
    let mut r = Episode::restore(task.clone(), &steps, 3, &d.path().join("r3"), EpisodeConfig::default()).unwrap();
    let s = r.step(RUN).unwrap();
    assert_eq!((s.kind, s.reward), (ActionKind::Error, 0.0));

    // Past the end of the episode is refused.
    assert!(matches!(
        Episode::restore(task, &steps, 5, &d.path().join("r5"), EpisodeConfig::default()),
        Err(EpisodeError::StepOutOfRange { .. })
    ));
}
