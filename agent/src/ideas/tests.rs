use super::*;
use std::collections::HashSet;

#[test]
fn every_training_task_has_at_least_100_distinct_ideas() {
    for a in adapters::ADAPTERS.iter() {
        let ideas = pool(a.task).unwrap();
        assert!(ideas.len() >= 100, "{}: {}", a.task, ideas.len());
        let texts: HashSet<&str> = ideas.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts.len(), ideas.len(), "{}: duplicate texts", a.task);
        let plans: Vec<&Plan> = ideas.iter().map(|i| i.plan.as_ref().unwrap()).collect();
        for (i, p) in plans.iter().enumerate() {
            assert!(!plans[..i].contains(p), "{}: duplicate plan {p:?}", a.task);
        }
        let families: HashSet<Family> = ideas.iter().map(|i| i.family).collect();
        assert!(families.len() >= 8, "{}: {families:?}", a.task);
    }
    assert!(matches!(pool("leaf-classification"), Err(IdeaError::NoGenerator(_))));
    let s = sample_pool("cifar-10", 100, 1).unwrap();
    assert_eq!(s.len(), 100);
    assert_eq!(s, sample_pool("cifar-10", 100, 1).unwrap());
    assert!(matches!(sample_pool("cifar-10", 1000, 1), Err(IdeaError::TooFew { .. })));
}

/// The facets an idea exercises: each task's own code (prelude and submission writer), its feature sets (shared by the
/// four image tasks), and the shared code per task kind (models, scalings, data steps, validation, ensembles,
/// post-processing). A covering subset runs every piece of generated code at least once.
fn facets(a: &adapters::Adapter, p: &Plan) -> Vec<String> {
    let model = |m: &Model| serde_json::to_value(m).unwrap()["name"].as_str().unwrap().to_string();
    let group = if a.image { "image" } else { a.task };
    let k = format!("{:?}", a.kind);
    let data = serde_json::to_value(p.data).unwrap()["step"].to_string();
    let mut f = vec![
        a.task.to_string(),
        format!("{group} features:{}", p.features),
        format!("{} data:{data}", if a.image { "image" } else { &k }),
        format!("{k} post:{}", serde_json::to_value(p.post).unwrap()["kind"]),
        format!("{k} model:{}", model(&p.model)),
        format!("{k} scaling:{:?}", p.scaling),
        format!("{k} validation:{}", serde_json::to_value(p.validation).unwrap()["scheme"]),
        format!("{k} ensemble:{}", serde_json::to_value(&p.ensemble).unwrap()["kind"]),
    ];
    if let Ensemble::Blend { with } = &p.ensemble {
        f.push(format!("{k} blend-with:{}", model(with)));
    }
    f
}

/// Run one generated program in a copy of the task's public folder; returns the graded metric.
fn run_program(task: &crate::TaskSpec, code: &str) -> Result<f64, String> {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(task.public_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("train.py"), code).unwrap();
    let out = std::process::Command::new("python3").arg("train.py").current_dir(dir.path()).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    crate::grade::grade(task.metric, &task.answers_path(), &dir.path().join("submission.csv")).map_err(|e| e.to_string())
}

fn check_ideas(mut pick: impl FnMut(&adapters::Adapter, &[Idea]) -> Vec<Idea>) {
    let mut jobs: Vec<(crate::TaskSpec, Idea)> = Vec::new();
    for a in adapters::ADAPTERS.iter() {
        let task = crate::suite::resolve(a.task, crate::suite::DEFAULT_SEED).unwrap();
        jobs.extend(pick(a, &pool(a.task).unwrap()).into_iter().map(|i| (task.clone(), i)));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some((task, idea)) = jobs.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                    let code = program_for(idea).unwrap();
                    match run_program(task, &code) {
                        Ok(m) => assert!(m.is_finite(), "{}: {m}", idea.id),
                        Err(e) => failures.lock().unwrap().push(format!("{}: {e}", idea.id)),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!("{} ideas ran", jobs.len());
    assert!(failures.is_empty(), "{} of {} ideas failed:\n{}", failures.len(), jobs.len(), failures.join("\n"));
}

/// Every piece of generated code (each feature set, model, scaling, data step, validation, ensemble, post-processing)
/// runs on its tasks and writes a gradable submission. The subset is a greedy set cover of [`facets`].
#[test]
fn a_covering_subset_of_every_pool_runs_and_is_graded() {
    let mut candidates: Vec<(&str, Idea, Vec<String>)> = Vec::new();
    for a in adapters::ADAPTERS.iter() {
        for i in pool(a.task).unwrap() {
            let f = facets(a, i.plan.as_ref().unwrap());
            candidates.push((a.task, i, f));
        }
    }
    let mut covered: HashSet<String> = HashSet::new();
    let mut chosen: HashSet<String> = HashSet::new();
    loop {
        let gain = |c: &(&str, Idea, Vec<String>)| c.2.iter().filter(|f| !covered.contains(*f)).count();
        let best = candidates.iter().max_by_key(|c| (gain(c), std::cmp::Reverse(c.1.id.clone()))).unwrap();
        if gain(best) == 0 {
            break;
        }
        covered.extend(best.2.iter().cloned());
        chosen.insert(best.1.id.clone());
    }
    check_ideas(|_, ideas| ideas.iter().filter(|i| chosen.contains(&i.id)).cloned().collect());
}

/// All ~940 ideas (several minutes): `cargo test -p mlagent-agent -- --ignored every_idea`.
#[test]
#[ignore]
fn every_idea_runs_and_is_graded() {
    check_ideas(|_, ideas| ideas.to_vec());
}

/// A scripted stand-in for the LLM: each round answers with the next canned reply and records the prompt.
struct Canned {
    replies: Vec<&'static str>,
    prompts: std::sync::Mutex<Vec<String>>,
}

impl crate::helper::Helper for Canned {
    fn complete(&self, prompt: &str) -> Result<String, crate::helper::HelperError> {
        let mut p = self.prompts.lock().unwrap();
        p.push(prompt.to_string());
        Ok(self.replies[(p.len() - 1).min(self.replies.len() - 1)].to_string())
    }
}

/// LLM idea pools: list markers stripped, near-duplicates (case, punctuation) and too-short lines dropped, asked
/// again with the ideas so far until `n` are in hand, ids numbered in order.
#[test]
fn llm_pool_deduplicates_and_asks_again_for_more() {
    let h = Canned {
        replies: vec![
            "1. Use gradient boosting with 300 trees\n2) use gradient-boosting with 300 trees!\n- short\n* Add target encoding of the cabin deck",
            "Add target encoding of the cabin deck\nStandardise numeric features before kNN\nBag five logistic regressions",
        ],
        prompts: Default::default(),
    };
    let ideas = llm_pool(&h, "spaceship-titanic", "Predict who was transported.", 4).unwrap();
    let texts: Vec<&str> = ideas.iter().map(|i| i.text.as_str()).collect();
    assert_eq!(
        texts,
        ["Use gradient boosting with 300 trees", "Add target encoding of the cabin deck", "Standardise numeric features before kNN", "Bag five logistic regressions"]
    );
    assert_eq!(ideas[3].id, "spaceship-titanic#003");
    assert!(ideas.iter().all(|i| i.plan.is_none() && i.family == Family::Proposed));
    let prompts = h.prompts.lock().unwrap();
    assert_eq!(prompts.len(), 2);
    assert!(prompts[1].contains("Add target encoding of the cabin deck"), "the second round lists the ideas so far");
}
