//! One test per action and per refusal path, on a four-row toy task.

use super::*;
use crate::metric::Metric;
use crate::task::Split;
use std::time::Duration;

const STARTER: &str = "import csv\nrows = list(csv.DictReader(open('test.csv')))\nwith open('submission.csv', 'w') as f:\n    f.write('id,label\\n')\n    for r in rows:\n        f.write(r['id'] + ',a\\n')\n";

pub(crate) struct Fixture {
    pub _dir: tempfile::TempDir,
    pub ws: Workspace,
    pub task: TaskSpec,
    pub sandbox: SandboxConfig,
    pub progress: Progress,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("task");
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::write(root.join("private/answers.csv"), "id,label\n1,a\n2,b\n3,a\n4,b\n").unwrap();
    let ep = dir.path().join("ep");
    let work = ep.join("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::write(work.join("train.py"), STARTER).unwrap();
    std::fs::write(work.join("test.csv"), "id,x\n1,0\n2,1\n3,0\n4,1\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "answers").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), work.join("link_out")).unwrap();
    let task = TaskSpec {
        name: "toy".into(),
        description: "description.md".into(),
        metric: Metric::Accuracy,
        direction: None,
        run: "python3 {script}".into(),
        script: "train.py".into(),
        time_limit_secs: 20,
        memory_mb: 1024,
        m_init: 0.5,
        m_best: 1.0,
        read_only: vec!["test.csv".into()],
        split: Split::External,
        submission: "submission.csv".into(),
        answers: "answers.csv".into(),
        root,
        layout: String::new(),
    };
    let ws = Workspace::open(&ep, &task.read_only).unwrap();
    let sandbox = SandboxConfig {
        limits: Limits { wall: Duration::from_secs(20), ..Limits::default() },
        namespaces: true,
        env: SandboxConfig::scrubbed_env(ws.work(), 1),
    };
    Fixture { _dir: dir, ws, task, sandbox, progress: Progress { m_t: 0.5, pending_edit: false, last_submission: None } }
}

struct Echo;
impl Helper for Echo {
    fn complete(&self, prompt: &str) -> Result<String, HelperError> {
        if prompt.contains("Edit the script") {
            Ok("Sure:\n```python\nprint('edited')\n```\nDone.".into())
        } else {
            Ok(format!("summary of {} chars", prompt.len()))
        }
    }
}

fn act(f: &mut Fixture, helper: Option<&dyn Helper>, name: &str, input: serde_json::Value) -> Result<Outcome, RunError> {
    let def = find(name).unwrap();
    let mut ctx = Ctx { ws: &f.ws, task: &f.task, sandbox: &f.sandbox, helper, progress: &mut f.progress };
    (def.run)(&mut ctx, input)
}

fn err(r: Result<Outcome, RunError>) -> String {
    match r {
        Err(RunError::Action(e)) => e.to_string(),
        other => panic!("expected an action error, got {other:?}"),
    }
}

use serde_json::json;

#[test]
fn list_files_and_refusals() {
    let mut f = fixture();
    let o = act(&mut f, None, "List Files", json!({"dir_path": "."})).unwrap();
    assert_eq!(o.observation, "link_out@\nsub/\ntest.csv\ntrain.py");
    assert_eq!(o.kind, ActionKind::NonEdit);
    assert!(err(act(&mut f, None, "List Files", json!({"dir_path": ".."}))).contains("outside the work folder"));
    assert!(err(act(&mut f, None, "List Files", json!({"dir_path": "train.py"}))).contains("not a directory"));
    assert!(matches!(act(&mut f, None, "List Files", json!({"dir_path": 3})), Err(RunError::Arguments(_))));
}

#[test]
fn copy_file_and_refusals() {
    let mut f = fixture();
    let o = act(&mut f, None, "Copy File", json!({"source": "train.py", "destination": "sub/b.py"})).unwrap();
    assert_eq!(o.kind, ActionKind::NonEdit);
    assert_eq!(std::fs::read_to_string(f.ws.work().join("sub/b.py")).unwrap(), STARTER);
    assert!(err(act(&mut f, None, "Copy File", json!({"source": "link_out", "destination": "x"}))).contains("outside"));
    assert!(err(act(&mut f, None, "Copy File", json!({"source": "train.py", "destination": "test.csv"}))).contains("read-only"));
    assert!(err(act(&mut f, None, "Copy File", json!({"source": "train.py", "destination": "../x.py"}))).contains("outside"));
    assert!(err(act(&mut f, None, "Copy File", json!({"source": "nope.py", "destination": "x.py"}))).contains("does not exist"));
}

#[test]
fn inspect_script_lines_limits() {
    let mut f = fixture();
    let o = act(&mut f, None, "Inspect Script Lines", json!({"script_name": "train.py", "start_line_number": 2, "end_line_number": "3"})).unwrap();
    assert!(o.observation.starts_with("Here are the lines (the file ends at line 6):\n\nrows = list"), "{}", o.observation);
    assert!(!o.observation.contains("import csv"));
    let e = err(act(&mut f, None, "Inspect Script Lines", json!({"script_name": "train.py", "start_line_number": 1, "end_line_number": 101})));
    assert!(e.contains("limited to 100 lines"));
    let e = err(act(&mut f, None, "Inspect Script Lines", json!({"script_name": "train.py", "start_line_number": 5, "end_line_number": 2})));
    assert!(e.contains("before"));
    assert!(err(act(&mut f, None, "Inspect Script Lines", json!({"script_name": "link_out", "start_line_number": 1, "end_line_number": 2}))).contains("outside"));
}

#[test]
fn understand_file_with_and_without_helper() {
    let mut f = fixture();
    let long: String = (0..60).map(|i| if i == 45 { "model = fit(x)\n".to_string() } else { format!("x{i} = {i}\n") }).collect();
    std::fs::write(f.ws.work().join("long.py"), long).unwrap();
    let o = act(&mut f, None, "Understand File", json!({"file_name": "long.py", "things_to_look_for": "the model"})).unwrap();
    assert!(o.observation.contains("No helper LLM") && o.observation.contains("   46: model = fit(x)"), "{}", o.observation);
    assert!(o.observation.contains("    1: x0 = 0") && !o.observation.contains("x30 = 30"));
    let o = act(&mut f, Some(&Echo), "Understand File", json!({"file_name": "long.py", "things_to_look_for": "model"})).unwrap();
    assert!(o.observation.starts_with("summary of"));
    assert!(err(act(&mut f, None, "Understand File", json!({"file_name": "link_out", "things_to_look_for": "x"}))).contains("outside"));
}

#[test]
fn write_file_and_undo() {
    let mut f = fixture();
    let o = act(&mut f, None, "Write File", json!({"file_name": "train.py", "content": "print(2)\n"})).unwrap();
    assert_eq!((o.kind, f.progress.pending_edit), (ActionKind::Edit, true));
    act(&mut f, None, "Write File", json!({"file_name": "new/model.py", "content": "x = 1\n"})).unwrap();
    assert!(err(act(&mut f, None, "Write File", json!({"file_name": "test.csv", "content": ""}))).contains("read-only"));
    assert!(err(act(&mut f, None, "Write File", json!({"file_name": "link_out", "content": ""}))).contains("outside"));
    assert!(err(act(&mut f, None, "Write File", json!({"file_name": "/tmp/evil.py", "content": ""}))).contains("outside"));
    let o = act(&mut f, None, "Undo Edit Script", json!({"script_name": "train.py"})).unwrap();
    assert!(o.observation.contains("import csv"));
    assert_eq!(std::fs::read_to_string(f.ws.work().join("train.py")).unwrap(), STARTER);
    act(&mut f, None, "Undo Edit Script", json!({"script_name": "new/model.py"})).unwrap();
    assert!(!f.ws.work().join("new/model.py").exists());
    assert!(err(act(&mut f, None, "Undo Edit Script", json!({"script_name": "train.py"}))).contains("no change to undo"));
}

#[test]
fn edit_script_ai_needs_a_helper() {
    let mut f = fixture();
    let args = json!({"script_name": "train.py", "edit_instruction": "print edited", "save_name": "train2.py"});
    assert!(err(act(&mut f, None, "Edit Script (AI)", args.clone())).contains("no editor is configured"));
    let o = act(&mut f, Some(&Echo), "Edit Script (AI)", args).unwrap();
    assert_eq!(o.kind, ActionKind::Edit);
    assert_eq!(std::fs::read_to_string(f.ws.work().join("train2.py")).unwrap(), "print('edited')\n");
    assert!(o.observation.contains("+print('edited')") && o.observation.contains("-import csv"));
}

#[test]
fn execute_script_grades_new_submissions() {
    let mut f = fixture();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "train.py"})).unwrap();
    assert_eq!((o.kind, o.metric), (ActionKind::NonEdit, Some(0.5)), "{}", o.observation);
    assert!(o.observation.contains("accuracy (higher is better) = 0.500000"));
    // Same submission again: nothing new to score.
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "train.py"})).unwrap();
    assert_eq!((o.kind, o.metric), (ActionKind::NonEdit, None));
    assert!(o.observation.contains("unchanged"));
    // An edit, then a run that scores it.
    let better = STARTER.replace("',a\\n'", "',' + ('a' if r['x'] == '0' else 'b') + '\\n'");
    act(&mut f, None, "Write File", json!({"file_name": "train.py", "content": better})).unwrap();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "train.py"})).unwrap();
    assert_eq!((o.kind, o.metric), (ActionKind::Edit, Some(1.0)), "{}", o.observation);
    assert!(!f.progress.pending_edit);
}

#[test]
fn execute_script_failures() {
    let mut f = fixture();
    std::fs::write(f.ws.work().join("crash.py"), "raise ValueError('boom')\n").unwrap();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "crash.py"})).unwrap();
    assert_eq!(o.kind, ActionKind::Error);
    assert!(o.observation.contains("ValueError: boom") && o.observation.contains("exit code 1"));
    std::fs::write(f.ws.work().join("bad.py"), "open('submission.csv','w').write('id,label\\n1,a\\n')\n").unwrap();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "bad.py"})).unwrap();
    assert_eq!(o.kind, ActionKind::Error);
    assert!(o.observation.contains("missing 3 id(s), first `2`"), "{}", o.observation);
    f.sandbox.limits.wall = Duration::from_millis(500);
    std::fs::write(f.ws.work().join("slow.py"), "import time\ntime.sleep(30)\n").unwrap();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "slow.py"})).unwrap();
    assert_eq!(o.kind, ActionKind::CornerCase);
    assert!(o.observation.contains("timed out"));
    f.sandbox.limits.wall = Duration::from_secs(20);
    f.sandbox.limits.memory_mb = Some(200);
    std::fs::write(f.ws.work().join("big.py"), "x = bytearray(2 * 1024 ** 3)\n").unwrap();
    let o = act(&mut f, None, "Execute Script", json!({"script_name": "big.py"})).unwrap();
    assert_eq!(o.kind, ActionKind::CornerCase, "{}", o.observation);
    assert!(o.observation.contains("out of memory"));
    assert!(err(act(&mut f, None, "Execute Script", json!({"script_name": "nope.py"}))).contains("does not exist"));
    assert!(err(act(&mut f, None, "Execute Script", json!({"script_name": "../../secret.txt"}))).contains("outside"));
}

#[test]
fn final_answer_grades_and_ends() {
    let mut f = fixture();
    let o = act(&mut f, None, "Final Answer", json!({"final_answer": "done"})).unwrap();
    assert_eq!((o.kind, o.done), (ActionKind::Error, true));
    assert!(o.observation.contains("no submission.csv"));
    std::fs::write(f.ws.work().join("submission.csv"), "id,label\n1,a\n2,b\n3,b\n4,b\n").unwrap();
    let o = act(&mut f, None, "Final Answer", json!({"final_answer": "done"})).unwrap();
    assert_eq!((o.kind, o.done, o.metric), (ActionKind::Final, true, Some(0.75)));
}

#[test]
fn the_action_list_renders_every_usage() {
    let tools = tools_prompt();
    for a in ACTIONS.iter() {
        assert!(tools.contains(&a.usage()), "{}", a.name);
        assert!(find(&a.name.to_uppercase()).is_some());
    }
    assert!(find("Execute").is_none());
}
