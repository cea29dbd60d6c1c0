//! The `mlagent` binary as a user runs it: exact CLI forms, outputs against the HF fixtures, and
//! bad input that must end in one `error:` line and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn mlagent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlagent")).args(args).output().expect("run mlagent")
}

fn ok(args: &[&str]) -> String {
    let out = mlagent(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mlagent {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let out = mlagent(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "mlagent {args:?} should fail");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("output")).expect("json")
}

fn reference_ids(name: &str) -> Vec<i64> {
    let bytes = std::fs::read(fixtures().join("qwen2-tiny-a/reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn logits_command_matches_reference_row() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("l.safetensors");
    let ids = reference_ids("input_ids");
    let model = fixtures().join("qwen2-tiny-a");
    ok(&["logits", "--model", model.to_str().unwrap(), "--input-ids", &join(&ids[..21]), "--output", out.to_str().unwrap()]);
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.shape(), &[21, 512]);
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let got: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let rb = std::fs::read(model.join("reference.safetensors")).unwrap();
    let rs = safetensors::SafeTensors::deserialize(&rb).unwrap();
    let want: Vec<f32> = rs.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let d = got.iter().zip(&want[..21 * 512]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d < 1e-3, "{d}");
}

#[test]
fn generate_json_greedy_matches_hf() {
    let prompt = reference_ids("greedy_prompt");
    let want = reference_ids("greedy_output");
    let model = fixtures().join("qwen2-tiny-a");
    let stdout = ok(&[
        "generate", "--model", model.to_str().unwrap(), "--prompt-ids", &join(&prompt), "--max-new-tokens", "16",
        "--temperature", "0", "--format", "json",
    ]);
    let v = last_json(&stdout);
    let got: Vec<i64> = v["token_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(got, want[prompt.len()..]);
    assert!(v["text"].is_string());
}

#[test]
fn chat_template_command_matches_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("qwen-tokenizer/chat_template_golden.json")).unwrap()).unwrap();
    let msgs = tmp.path().join("m.json");
    std::fs::write(&msgs, golden[0]["messages"].to_string()).unwrap();
    let dir = fixtures().join("qwen-tokenizer");
    let v = last_json(&ok(&[
        "chat-template", "--model", dir.to_str().unwrap(), "--messages", msgs.to_str().unwrap(), "--add-generation-prompt",
        "--format", "json",
    ]));
    assert_eq!(v["text"], golden[0]["text"]);
    assert_eq!(v["input_ids"], golden[0]["input_ids"]);
}

#[test]
fn init_model_is_deterministic_and_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&["init-model", "--preset", "tiny", "--out", a.to_str().unwrap(), "--seed", "3"]);
    ok(&["init-model", "--preset", "tiny", "--out", b.to_str().unwrap(), "--seed", "3"]);
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let info = last_json(&ok(&["info", "--model", a.to_str().unwrap(), "--format", "json"]));
    assert_eq!(info["vocab_size"], 8192);
    assert_eq!(info["chat_template"], true);
    let vocab = info["tokenizer_vocab"].as_u64().unwrap();
    assert!((4000..=8192).contains(&vocab), "tokenizer vocab {vocab}");
    // Chat prompt → sampled tokens, reproducible for a seed.
    let generate = |seed: &str| {
        last_json(&ok(&[
            "generate", "--model", a.to_str().unwrap(), "--prompt", "List Files in the work folder", "--chat",
            "--max-new-tokens", "6", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "50", "--seed", seed, "--format", "json",
        ]))
    };
    let (x, y) = (generate("1"), generate("1"));
    assert_eq!(x, y);
    assert!(!x["token_ids"].as_array().unwrap().is_empty());
    // The model as the idea embedder of `collect` (mean-pooled hidden states): farthest-point selection
    // spreads the chosen ideas further apart than random ones in that space.
    let out = tmp.path().join("data");
    ok(&[
        "collect", "--tasks", "spaceship-titanic", "--trajectories-per-task", "1", "--max-steps", "2", "--workers", "1",
        "--embedding-model-dir", a.to_str().unwrap(), "--out", out.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let task = &report["tasks"][0];
    let (sel, rnd) = (task["selected_distance"].as_f64().unwrap(), task["random_distance"].as_f64().unwrap());
    assert!(sel > rnd && rnd > 0.0, "selected {sel}, random {rnd}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("qwen2-tiny-a");
    let m = model.to_str().unwrap();
    let out = tmp.path().join("o.safetensors");
    let o = out.to_str().unwrap();

    let e = fails(&["logits", "--model", "/no/such/model", "--input-ids", "1,2", "--output", o]);
    assert!(e.contains("/no/such/model"), "{e}");

    let e = fails(&["logits", "--model", m, "--input-ids", "1,512", "--output", o]);
    assert!(e.contains("token id 512"), "{e}");

    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), broken.join(f)).unwrap();
    }
    let st = broken.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    let e = fails(&["logits", "--model", broken.to_str().unwrap(), "--input-ids", "1,2", "--output", o]);
    assert!(e.contains("model.safetensors"), "{e}");

    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap().replace("\"default\"", "\"yarn\"");
    std::fs::write(broken.join("config.json"), cfg).unwrap();
    let e = fails(&["info", "--model", broken.to_str().unwrap()]);
    assert!(e.contains("config.json") && e.contains("yarn"), "{e}");

    let tok = tmp.path().join("tok");
    std::fs::create_dir(&tok).unwrap();
    std::fs::copy(fixtures().join("qwen-tokenizer/tokenizer.json"), tok.join("tokenizer.json")).unwrap();
    let msgs = tmp.path().join("m.json");
    std::fs::write(&msgs, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
    let e = fails(&["chat-template", "--model", tok.to_str().unwrap(), "--messages", msgs.to_str().unwrap(), "--format", "json"]);
    assert!(e.contains("no chat_template"), "{e}");

    std::fs::write(&msgs, "[{not json").unwrap();
    let e = fails(&["chat-template", "--model", fixtures().join("qwen-tokenizer").to_str().unwrap(), "--messages", msgs.to_str().unwrap()]);
    assert!(e.contains("m.json"), "{e}");
}

#[test]
fn cuda_without_its_libraries_is_an_error_not_a_panic() {
    // CubeCL loads libcuda and NVRTC on its first call and panics without them; the device
    // parser looks for them first. On a machine that has both, the command runs.
    let args = ["kernels", "check", "--device", "cuda", "--dtype", "f32", "--seq-len", "20", "--head-dim", "16", "--vocab", "50", "--tokens", "8", "--format", "json"];
    let out = mlagent(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(last_json(&String::from_utf8_lossy(&out.stdout))["attention"]["fwd_rel_err"].is_f64(), "{stderr}");
    } else {
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains("'cuda'") && (first.contains("libcuda.so") || first.contains("libnvrtc.so")), "{stderr}");
    }
}

#[test]
fn sft_trains_saves_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    ok(&["init-model", "--preset", "tiny", "--out", model.to_str().unwrap()]);
    let data = tmp.path().join("d.jsonl");
    let line = |q: &str, a: &str| {
        serde_json::json!({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}).to_string()
    };
    let text = [
        line("Step 0. Now respond.", "Thought: look\nAction: List Files\nAction Input: {\"dir_path\": \".\"}"),
        line("Step 1. Now respond.", "Thought: run\nAction: Execute Script\nAction Input: {\"script_name\": \"train.py\"}"),
        line("Step 2. Now respond.", "Thought: done\nAction: Final Answer\nAction Input: {\"final_answer\": \"ok\"}"),
    ]
    .join("\n");
    std::fs::write(&data, text).unwrap();
    let out = tmp.path().join("run");
    let common = ["--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--batch-size", "1", "--grad-accum", "1"];
    let mut args = vec!["sft", "--model", model.to_str().unwrap(), "--epochs", "2", "--max-steps", "2"];
    args.extend(common);
    ok(&args);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let curves = std::fs::read(out.join("curves.png")).expect("OUT/curves.png");
    assert!(curves.starts_with(b"\x89PNG\r\n\x1a\n"), "curves.png is not a PNG");
    // The saved model generates, and a resumed run continues from step 2.
    ok(&["generate", "--model", out.join("model").to_str().unwrap(), "--prompt", "Step 0.", "--chat", "--max-new-tokens", "3"]);
    let ckpt = out.join("checkpoint-2");
    let mut args = vec!["sft", "--resume", ckpt.to_str().unwrap()];
    args.extend(common);
    // The checkpoint's own max-steps (2) is reached already: resuming finishes at once and re-saves.
    ok(&args);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 2);
    // --max-steps may change on resume (one more step); a setting that changes the steps may not.
    let mut more = args.clone();
    more.extend(["--max-steps", "3"]);
    ok(&more);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 3);
    let mut other = args.clone();
    other.extend(["--lr", "0.5"]);
    let e = fails(&other);
    assert!(e.contains("--lr 0.5 differs from") && e.contains("checkpoint-2"), "{e}");
    // Validation every step: a val row per step, and the end-of-training report is the last step's.
    let vout = tmp.path().join("val");
    let d = data.to_str().unwrap();
    ok(&["sft", "--model", model.to_str().unwrap(), "--data", d, "--out", vout.to_str().unwrap(), "--batch-size", "1",
        "--epochs", "1", "--max-steps", "2", "--val-data", d, "--val-every", "1"]);
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(vout.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let vals: Vec<&serde_json::Value> = rows.iter().filter(|r| r.get("val_loss").is_some()).collect();
    assert_eq!((rows.len(), vals.len()), (4, 2), "{rows:?}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(vout.join("validation.json")).unwrap()).unwrap();
    assert_eq!(report["held_out"]["loss"], vals[1]["val_loss"], "{report}");
    let e = fails(&["sft", "--model", model.to_str().unwrap(), "--data", "/no/data.jsonl", "--out", out.to_str().unwrap()]);
    assert!(e.contains("/no/data.jsonl"), "{e}");
}

#[test]
fn env_step_runs_a_local_helper_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    ok(&["init-model", "--preset", "tiny", "--out", model.to_str().unwrap()]);
    let ws = tmp.path().join("ep");
    ok(&["env", "reset", "--task", "spaceship-titanic", "--workspace", ws.to_str().unwrap(), "--format", "json"]);
    let resp = tmp.path().join("r.txt");
    std::fs::write(
        &resp,
        "Thought: read it\nAction: Understand File\nAction Input: {\"file_name\": \"train.py\", \"things_to_look_for\": \"the model\"}",
    )
    .unwrap();
    let v = last_json(&ok(&[
        "env", "step", "--workspace", ws.to_str().unwrap(), "--response-file", resp.to_str().unwrap(),
        "--helper-model-dir", model.to_str().unwrap(), "--helper-max-tokens", "8", "--format", "json",
    ]));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["kind"], "non_edit", "{v}");
    let e = fails(&["env", "step", "--workspace", ws.to_str().unwrap(), "--response-file", resp.to_str().unwrap(), "--helper-model-dir", "/no/model"]);
    assert!(e.contains("/no/model"), "{e}");
}

#[test]
fn rl_trains_resumes_and_eval_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    ok(&["init-model", "--preset", "tiny", "--out", &p("tiny")]);
    ok(&["collect", "--tasks", "spaceship-titanic", "--trajectories-per-task", "1", "--max-steps", "4", "--workers", "2", "--out", &p("data")]);
    let data = p("data/trajectories.jsonl");
    let (tiny, rl, ep) = (p("tiny"), p("rl"), p("ep"));
    // SFT's end-of-training check: greedy actions of the base and trained model on expert states.
    ok(&[
        "sft", "--model", &tiny, "--data", &p("data/sft_messages.jsonl"), "--out", &p("sft"), "--max-steps", "1",
        "--cutoff-len", "256", "--eval-states", &data, "--eval-states-count", "2", "--eval-max-new-tokens", "8", "--eval-base",
    ]);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("sft/eval_states.json")).unwrap()).unwrap();
    for m in ["base", "sft"] {
        assert_eq!(v[m]["states"], 2, "{v}");
        assert!((0.0..=1.0).contains(&v[m]["valid_rate"].as_f64().unwrap()), "{v}");
    }
    let small = ["--max-new-tokens", "8", "--max-prompt-tokens", "192", "--mini-batches", "1", "--workers", "2"];
    let mut args = vec!["rl", "--model", &tiny, "--data", &data, "--out", &rl, "--iterations", "1", "--batch", "2"];
    args.extend(small);
    ok(&args);
    let line = |path: &str, n: usize| -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), n, "{text}");
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let m = line(&p("rl/metrics.jsonl"), 1);
    assert_eq!(m["rollouts"], 2, "{m}");
    let r = m["reward_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&r) && m["value_loss"].as_f64().unwrap().is_finite(), "{m}");
    assert!(std::fs::read(p("rl/curves.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(tmp.path().join("rl/checkpoint-1/critic/value_head.safetensors").is_file());
    // Resume to a second iteration; then the episode-wise baseline.
    ok(&["rl", "--resume", &p("rl/checkpoint-1"), "--out", &p("rl"), "--iterations", "2"]);
    assert_eq!(line(&p("rl/metrics.jsonl"), 2)["iteration"], 2);
    let mut args = vec!["rl", "--model", &tiny, "--data", &data, "--out", &ep, "--mode", "episode", "--iterations", "1"];
    args.extend(["--batch", "1", "--episode-steps", "2"]);
    args.extend(small);
    ok(&args);
    assert_eq!(line(&p("ep/metrics.jsonl"), 1)["rollouts"], 2);

    // Evaluation of the trained actor: K = 2 episodes of one step on a held-out task.
    let v = last_json(&ok(&[
        "eval", "--model", &p("rl/model"), "--tasks", "detecting-insults-in-social-commentary", "-k", "2", "--max-steps", "1",
        "--max-new-tokens", "8", "--out", &p("eval"), "--format", "json",
    ]));
    assert_eq!(v["tasks"][0]["finals"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["tasks"][0]["steps"], 2, "{v}");
    let rate = v["valid_action_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate), "{v}");
    assert!(tmp.path().join("eval/eval.md").is_file() && std::fs::read(p("eval/eval.png")).unwrap().starts_with(b"\x89PNG"));

    // Bad inputs: a held-out task in the states pool, an unknown eval task.
    let bad = p("bad.jsonl");
    std::fs::write(&bad, "{\"task\": \"leaf-classification\", \"steps\": []}\n").unwrap();
    let e = fails(&["rl", "--model", &p("tiny"), "--data", &bad, "--out", &p("bad")]);
    assert!(e.contains("bad.jsonl:1") && e.contains("held out"), "{e}");
    let e = fails(&["eval", "--model", &p("tiny"), "--tasks", "no-such-task", "--out", &p("bad")]);
    assert!(e.contains("no-such-task"), "{e}");
}

#[test]
fn bench_forward_and_train_report_throughput() {
    let model = fixtures().join("qwen2-tiny-a");
    let m = model.to_str().unwrap();
    let v = last_json(&ok(&["bench", "forward", "--model", m, "--tokens", "12", "--decode-tokens", "3", "--repeats", "2", "--json"]));
    assert_eq!((v["prefill_tokens"].as_u64(), v["decode_tokens"].as_u64()), (Some(12), Some(3)), "{v}");
    assert!(v["prefill_tokens_per_s"].as_f64().unwrap() > 0.0 && v["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let v = last_json(&ok(&["bench", "train", "--model", m, "--tokens", "16", "--batch", "2", "--steps", "2", "--warmup", "1", "--json"]));
    assert_eq!((v["batch"].as_u64(), v["tokens"].as_u64(), v["steps"].as_u64()), (Some(2), Some(16), Some(2)), "{v}");
    let (median, mean) = (v["median_tokens_per_s"].as_f64().unwrap(), v["mean_tokens_per_s"].as_f64().unwrap());
    assert!(median > 0.0 && mean > 0.0 && median.is_finite(), "{v}");
    // Gradient checkpointing recomputes activations: the same losses step for step.
    let plain = &v["losses"];
    let c = last_json(&ok(&["bench", "train", "--model", m, "--tokens", "16", "--batch", "2", "--steps", "2", "--warmup", "1", "--grad-checkpointing", "--json"]));
    assert_eq!(c["grad_checkpointing"], true, "{c}");
    let (p, q) = (plain.as_array().unwrap(), c["losses"].as_array().unwrap());
    assert_eq!(p.len(), 3, "{v}");
    for (x, y) in p.iter().zip(q) {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "losses differ with checkpointing: {p:?} vs {q:?}");
    }
    let e = fails(&["bench", "train", "--model", m, "--tokens", "1"]);
    assert!(e.contains("--tokens"), "{e}");
    let e = fails(&["bench", "train", "--model", m, "--tokens", "100000"]);
    assert!(e.contains("100000") && e.contains("positions"), "{e}");
}

#[test]
fn kernels_bench_baselines_and_the_training_backward() {
    let args = |extra: &[&'static str]| {
        let mut a = vec!["kernels", "bench", "--op", "attention", "--seq-len", "40", "--heads", "3", "--kv-heads", "1", "--head-dim", "16", "--causal", "--warmup", "0", "--repeats", "1", "--format", "json"];
        a.extend_from_slice(extra);
        a
    };
    let names = |v: &serde_json::Value| v["results"].as_array().unwrap().iter().map(|r| r["impl"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let v = last_json(&ok(&args(&["--bwd", "--baseline", "reference"])));
    assert_eq!(names(&v), ["mlagent flash attention", "plain-ops reference"], "{v}");
    let v = last_json(&ok(&args(&["--bwd", "--reference-bwd"])));
    assert_eq!(names(&v), ["mlagent fwd, reference bwd", "burn attention"], "{v}");
    assert!(fails(&args(&["--reference-bwd"])).contains("needs --op attention --bwd"));
    assert!(fails(&["kernels", "bench", "--op", "ppo", "--baseline", "burn"]).contains("burn has no PPO loss"));
}

#[test]
fn kernels_bench_refuses_buffers_over_the_device_limit_without_a_panic() {
    if !mlagent_engine::device::wgpu_available() {
        eprintln!("skipping: no wgpu adapter");
        return;
    }
    // [4096, 65536] f32 logits are 1 GiB: over lavapipe's 128 MiB (and over most GPUs' WGPU binding
    // limit). CubeCL's WGPU server panics on such a request; the command must refuse it first.
    let out = mlagent(&["kernels", "bench", "--device", "wgpu", "--op", "ppo", "--tokens", "4096", "--vocab", "65536", "--repeats", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        eprintln!("this adapter allocates 1 GiB buffers; nothing to refuse");
        return;
    }
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: the f32 logits [4096, 65536] needs a 1024.0 MiB buffer") && last.contains("--tokens"), "{stderr}");
}

#[test]
fn kernels_bench_reports_time_and_device_memory() {
    let args = |device: &'static str| ["kernels", "bench", "--device", device, "--op", "ppo", "--tokens", "64", "--vocab", "1000", "--bwd", "--warmup", "1", "--repeats", "2", "--format", "json"];
    let v = last_json(&ok(&args("cpu")));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2, "{v}");
    assert!(r.iter().all(|x| x["ms"].as_f64().unwrap() > 0.0 && x["GB/s"].as_f64().unwrap() > 0.0), "{v}");
    // The queued timing, and its rate from the same byte count.
    for x in r {
        let (ms, q) = (x["ms"].as_f64().unwrap(), x["queued_ms"].as_f64().unwrap());
        let rate = x["GB/s"].as_f64().unwrap() * ms / q;
        assert!(q > 0.0 && (x["GB/s queued"].as_f64().unwrap() - rate).abs() <= 1e-9 * rate, "{v}");
    }
    // No device pools on the CPU backend: no memory figures rather than zeros.
    assert!(r[0]["kept_bytes"].is_null() && r[0]["peak_bytes_max"].is_null(), "{v}");
    if !mlagent_engine::device::wgpu_available() {
        eprintln!("skipping the wgpu half: no wgpu adapter");
        return;
    }
    // On a CubeCL device the fused loss keeps one dlogits buffer [64, 1000] f32 and nothing of that
    // size besides; the bound on its peak is at least what it kept.
    let v = last_json(&ok(&args("wgpu")));
    let fused = &v["results"][0];
    let dlogits = 64 * 1000 * 4;
    let (kept, peak) = (fused["kept_bytes"].as_u64().unwrap(), fused["peak_bytes_max"].as_u64().unwrap());
    assert!(kept >= dlogits && kept < 2 * dlogits && peak >= kept, "{v}");
}
