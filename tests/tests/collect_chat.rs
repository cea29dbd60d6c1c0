//! Collected SFT samples render through the model's chat template to exactly the text the policy will see.
//!
//! A real (small) collection with the scripted expert writes `sft_messages.jsonl` and `sft_sharegpt.jsonl`; the tiny
//! preset's tokenizer (ChatML template) renders each sample's prompt, and that must equal the template applied to
//! `State::messages()` of the state rebuilt from the trajectory — what the model-backed policy renders at run time.
//! The full conversation (prompt + expert response) must extend the prompt's rendering, so assistant-only labels
//! start exactly where the policy's generation starts, and the tokenizer must round-trip it. With a prompt budget far
//! below the prompts' length, SFT's fitted and cut prompt must equal the acting prompt token for token.

use burn::backend::Flex;
use mlagent_agent::collect::{self, CollectConfig, IdeaSource};
use mlagent_agent::embed::TfIdf;
use mlagent_agent::episode::EpisodeConfig;
use mlagent_agent::expert::ScriptedExpert;
use mlagent_agent::suite;
use mlagent_agent::trace::Trajectory;
use mlagent_engine::preset::{Preset, write_preset};
use mlagent_engine::{ChatMessage, TextTokenizer};
use mlagent_train::actor::PromptCodec;
use mlagent_train::rl::StatesPool;
use mlagent_train::sft::{fit_messages, tokenize, truncate};

#[test]
fn collected_samples_render_through_the_chat_template_as_the_policy_sees_them() {
    let out = tempfile::tempdir().unwrap();
    let cfg = CollectConfig {
        tasks: vec!["spaceship-titanic".into()],
        trajectories_per_task: 1,
        ideas: 100,
        diverse: 10,
        ideas_per_episode: (1, 2),
        workers: 1,
        seed: 5,
        suite_seed: suite::DEFAULT_SEED,
        out: out.path().to_path_buf(),
        episode: EpisodeConfig { max_steps: Some(30), namespaces: false, ..Default::default() },
    };
    collect::collect(&cfg, &IdeaSource::Offline, &TfIdf::default(), &ScriptedExpert::new(5), &|_| {}).unwrap();

    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.path().join(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let messages = read("sft_messages.jsonl");
    let sharegpt = read("sft_sharegpt.jsonl");
    let trajs: Vec<Trajectory> = read("trajectories.jsonl").into_iter().map(|v| serde_json::from_value(v).unwrap()).collect();
    assert_eq!(trajs.len(), 1);

    // The tiny preset's tokenizer, trained on the collected text itself.
    let corpus: Vec<String> = messages
        .iter()
        .flat_map(|m| m["messages"].as_array().unwrap().iter().map(|x| x["content"].as_str().unwrap().to_string()))
        .collect();
    let model_dir = tempfile::tempdir().unwrap();
    write_preset::<Flex>(Preset::Tiny, &corpus, 0, model_dir.path(), &Default::default()).unwrap();
    let tok = TextTokenizer::from_dir(model_dir.path()).unwrap();

    let task = suite::resolve("spaceship-titanic", suite::DEFAULT_SEED).unwrap();
    let description = task.description_text().unwrap();
    let states = collect::step_states(&task, &description, &trajs[0], &cfg.episode);
    assert_eq!(states.len(), messages.len());
    // RL and the end-of-SFT check rebuild states through the states pool, under their own episode
    // settings (here no step limit, where collection had 30): the model must see the same text.
    let pool = StatesPool::from_jsonl(&out.path().join("trajectories.jsonl"), suite::DEFAULT_SEED).unwrap();
    assert_eq!(pool.len(), states.len());
    for (i, s) in states.iter().enumerate() {
        assert_eq!(pool.state(i, &EpisodeConfig::default()).render(), s.render(), "step {i}: the pool renders another prompt");
    }
    const MAX_PROMPT: usize = 384;
    let codec = PromptCodec::from_dir(model_dir.path(), MAX_PROMPT).unwrap();
    let mut fitted = 0;
    for (i, ((m, s), state)) in messages.iter().zip(&sharegpt).zip(&states).enumerate() {
        // What the policy sees: State::messages() through the template, with the generation prompt.
        let live: Vec<ChatMessage> = state.messages().into_iter().map(|x| ChatMessage::new(x.role, x.content)).collect();
        let policy_text = tok.apply_chat_template(&live, true).unwrap();
        // What SFT sees: the sample's user turn through the same template.
        let prompt_only = serde_json::Value::Array(vec![m["messages"][0].clone()]);
        let (sample_text, ids) = tok.chat_ids_json(&prompt_only, true).unwrap();
        assert_eq!(sample_text, policy_text, "step {i}");
        assert!(policy_text.starts_with("<|im_start|>user\n") && policy_text.ends_with("<|im_start|>assistant\n"));
        // ShareGPT carries the same two turns.
        assert_eq!(s["conversations"][0]["value"], m["messages"][0]["content"]);
        assert_eq!(s["conversations"][1]["value"], m["messages"][1]["content"]);
        // The full conversation extends the prompt: the response starts where generation starts.
        let (full, full_ids) = tok.chat_ids_json(&m["messages"], false).unwrap();
        let response = m["messages"][1]["content"].as_str().unwrap();
        assert_eq!(full, format!("{policy_text}{response}<|im_end|>\n"), "step {i}");
        assert_eq!(&full_ids[..ids.len()], &ids[..], "step {i}: prompt tokens are a prefix of the sample's tokens");
        assert_eq!(tok.decode(&full_ids, false).unwrap(), full, "step {i}");
        // Small budget: the SFT sample's prompt (fitted, tokenised, cut) is the acting prompt.
        let acting = codec.encode(&state.render()).unwrap();
        assert!(acting.len() <= MAX_PROMPT, "step {i}: {} tokens", acting.len());
        let sample = truncate(&tokenize(&tok, &fit_messages(&tok, &m["messages"], MAX_PROMPT).unwrap()).unwrap(), 640, MAX_PROMPT);
        let first_label = sample.labels.iter().position(|&l| l).unwrap();
        assert_eq!(&sample.ids[..first_label], &acting[..], "step {i}");
        let text = tok.decode(&acting, false).unwrap();
        if text.contains("Tools: List Files, ") {
            fitted += 1;
            // The fitted prompt keeps the task title, the newest response and the cue.
            assert!(text.contains("Research Problem: # "), "step {i}");
            if let Some(last) = state.history.last() {
                assert!(text.contains(last.response.trim()), "step {i}: newest response missing");
            }
            assert!(text.contains(&format!("Step {}. Now respond", state.step)), "step {i}");
        }
    }
    assert_eq!(fitted, states.len(), "every prompt is longer than {MAX_PROMPT} tokens and is fitted");
}
