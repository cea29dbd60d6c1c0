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
    // Every idea goes through the offline editor: short actions whose observation names the change made.
    let edits: Vec<_> = outcomes.iter().filter(|(_, o)| o.action.as_deref() == Some("Edit Script (AI)")).collect();
    assert!(edits.len() >= 3 && !names.iter().any(|n| n == "Write File"), "{names:?}");
    assert!(edits.iter().all(|(_, o)| o.kind == ActionKind::Edit && o.observation.contains("The offline editor matched")));
    assert!(edits.iter().any(|(_, o)| o.observation.contains(&picked[0].text)), "{edits:#?}");
    let graded: Vec<f64> =
        outcomes.iter().filter(|(_, o)| o.action.as_deref() == Some("Execute Script")).filter_map(|(_, o)| o.metric).collect();
    assert!(graded.len() >= 4, "{graded:?}");
    let best = graded.iter().copied().fold(f64::MIN, f64::max);
    let (_, last) = outcomes.last().unwrap();
    assert_eq!(last.kind, ActionKind::Final);
    assert!((last.metric.unwrap() - best).abs() < 1e-12, "final {:?} best {best}", last.metric);
    assert!(best > task.m_init, "no idea beat the starter: {graded:?}");
}

/// Drive the expert with hand-written observations: a crash gets one simpler retry, a second failure is undone twice
/// (back to the kept script), and the stale submission is re-run before Final Answer.
#[test]
fn failures_get_one_fallback_then_are_undone() {
    use crate::metric::{Direction, Metric};
    use crate::prompt::{Exchange, State};
    let pool = ideas::pool("home-data-for-ml-course").unwrap();
    let expert = ScriptedExpert::new(1);
    let mut history: Vec<Exchange> = Vec::new();
    let mut ask = |obs: Option<&str>| -> String {
        if let Some(o) = obs {
            let i = history.len();
            history.push(Exchange { index: i, response: String::new(), observation: o.into() });
        }
        let state = State {
            task: "home-data-for-ml-course".into(),
            description: "d".into(),
            metric: Metric::Mae,
            direction: Direction::Minimize,
            step: history.len(),
            history: history.clone(),
        };
        expert.respond(&[Prompt { episode: "x".into(), state, ideas: vec![pool[3].clone()] }]).unwrap().remove(0)
    };
    let action = |r: &str| r.lines().find_map(|l| l.strip_prefix("Action: ")).unwrap().to_string();
    assert_eq!(action(&ask(None)), "List Files");
    assert_eq!(action(&ask(Some("train.py"))), "Inspect Script Lines");
    let mut r = ask(Some("lines"));
    if action(&r) == "Understand File" {
        r = ask(Some("excerpt"));
    }
    assert_eq!(action(&r), "Execute Script");
    let w = ask(Some("ok\nSubmission graded: mae (lower is better) = 50000.000000 (previous 52432.700000)."));
    assert_eq!(action(&w), "Edit Script (AI)");
    assert!(w.contains(&pool[3].text) && crate::parse::parse(&w).is_ok(), "{w}");
    assert_eq!(action(&ask(Some("File train.py written."))), "Execute Script");
    let fix = ask(Some("Traceback (most recent call last):\nValueError: boom\nThe script failed with exit code 1."));
    assert_eq!(action(&fix), "Edit Script (AI)");
    assert!(fix.contains("ValueError: boom") && fix.contains("Simplified:"), "{fix}");
    assert_eq!(action(&ask(Some("File train.py written."))), "Execute Script");
    assert_eq!(action(&ask(Some("The script timed out after 60 s and was stopped."))), "Undo Edit Script");
    assert_eq!(action(&ask(Some("Restored train.py."))), "Undo Edit Script");
    // Nothing was graded since the baseline run, so no re-run is needed.
    let fin = ask(Some("Restored train.py."));
    assert_eq!(action(&fin), "Final Answer");
    assert!(fin.contains("Baseline 50000.000000") && fin.contains("failed (undone)"), "{fin}");
}

/// The LLM expert against a local OpenAI-compatible server: the request carries the ideas in a system message and
/// the state, exactly as rendered, as the user message; the reply's content is the response, and it steps the
/// episode like any policy's.
#[test]
fn llm_expert_speaks_openai_chat_and_its_answer_steps_the_episode() {
    let task = crate::suite::resolve("spaceship-titanic", crate::suite::DEFAULT_SEED).unwrap();
    let pool = ideas::pool(&task.name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = EpisodeConfig { max_steps: Some(5), namespaces: false, ..Default::default() };
    let mut ep = Episode::reset(task, dir.path(), config).unwrap();
    let answer = "Thought: look around first.\nAction: List Files\nAction Input: {\n    \"dir_path\": \".\"\n}";
    let reply = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": answer}}]}).to_string();
    let (port, server) = crate::http::serve_once(reply);
    let expert = LlmExpert::new(&format!("http://127.0.0.1:{port}/v1"), "test-model", None, 0.3).unwrap();
    let prompt = Prompt { episode: "e".into(), state: ep.state(), ideas: vec![pool[5].clone()] };
    let got = expert.respond(std::slice::from_ref(&prompt)).unwrap().remove(0);
    assert_eq!(got, answer);
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /v1/chat/completions"), "{request}");
    let body: serde_json::Value = serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["model"], "test-model");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "system");
    assert!(msgs[0]["content"].as_str().unwrap().contains(&pool[5].text));
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(msgs[1]["content"].as_str().unwrap(), prompt.text());
    let outcome = ep.step(&got).unwrap();
    assert!(outcome.valid && outcome.action.as_deref() == Some("List Files"), "{outcome:?}");
}
