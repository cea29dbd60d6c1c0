//! The engine against HF transformers: float64 reference logits, left padding, greedy output and
//! the chat template of a real Qwen tokenizer (fixtures in tests/fixtures, see their REFERENCE.md).

use burn::backend::Flex;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use mlagent_engine::generate::left_padded_input;
use mlagent_engine::{ForwardInput, GenerateOptions, KvCache, Qwen2, SamplingParams, TextTokenizer};
use mlagent_tests::{fixture, read_tensor};

type B = Flex;

fn model() -> Qwen2<B> {
    mlagent_engine::io::load::<B>(&fixture("qwen2-tiny-a"), FloatDType::F32, &Default::default()).unwrap().0
}

fn reference(name: &str) -> (Vec<usize>, Vec<f64>) {
    read_tensor(&fixture("qwen2-tiny-a").join("reference.safetensors"), name)
}

fn rows(ids: &[f64], shape: &[usize]) -> Vec<Vec<u32>> {
    ids.chunks(shape[1]).map(|r| r.iter().map(|&x| x as u32).collect()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

#[test]
fn logits_match_hf_float64_reference() {
    let m = model();
    let (shape, ids) = reference("input_ids");
    let input = left_padded_input::<B>(&rows(&ids, &shape), 0, &Default::default());
    let logits = m.forward(&input, None).into_data().to_vec::<f32>().unwrap();
    let (_, want) = reference("logits");
    let diff = max_abs_diff(&logits, &want);
    assert!(diff < 1e-3, "max |logits − HF| = {diff}");
}

#[test]
fn left_padded_logits_match_on_real_positions() {
    let m = model();
    let (shape, ids) = reference("padded_input_ids");
    let (_, mask) = reference("padded_attention_mask");
    let (_, want) = reference("padded_logits");
    let (b, t) = (shape[0], shape[1]);
    // Rebuild the padded batch from the mask: pad length = number of leading zeros.
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|r| (0..t).filter(|&i| mask[r * t + i] == 1.0).map(|i| ids[r * t + i] as u32).collect())
        .collect();
    let input = left_padded_input::<B>(&prompts, 0, &Default::default());
    assert_eq!(input.pad_lens.as_ref().unwrap()[0], 5);
    let got = m.forward(&input, None).into_data().to_vec::<f32>().unwrap();
    let v = got.len() / (b * t);
    let mut worst = 0.0f64;
    for r in 0..b {
        for i in 0..t {
            if mask[r * t + i] == 1.0 {
                let o = (r * t + i) * v;
                worst = worst.max(max_abs_diff(&got[o..o + v], &want[o..o + v]));
            }
        }
    }
    assert!(worst < 1e-3, "max |padded logits − HF| = {worst}");
}

#[test]
fn greedy_output_is_identical() {
    let m = model();
    let (pshape, prompt) = reference("greedy_prompt");
    let (_, want) = reference("greedy_output");
    let opts = GenerateOptions {
        max_new_tokens: 16,
        sampling: SamplingParams::greedy(),
        seed: 0,
        eos_ids: vec![],
        stop_strings: vec![],
        pad_id: 0,
    };
    let prompts = rows(&prompt, &pshape);
    let out = mlagent_engine::generate(&m, &prompts, &opts, None, &Default::default()).unwrap();
    let full: Vec<u32> = prompts[0].iter().chain(&out[0].token_ids).copied().collect();
    let want: Vec<u32> = want.iter().map(|&x| x as u32).collect();
    assert_eq!(full, want);
}

#[test]
fn batched_generation_equals_one_by_one() {
    let m = model();
    let prompts = vec![vec![5, 17, 300, 2], vec![9, 8, 7, 6, 5, 4, 3, 2, 1], vec![100]];
    let opts = GenerateOptions {
        max_new_tokens: 6,
        sampling: SamplingParams::greedy(),
        seed: 0,
        eos_ids: vec![],
        stop_strings: vec![],
        pad_id: 0,
    };
    let dev = Default::default();
    let batched = mlagent_engine::generate(&m, &prompts, &opts, None, &dev).unwrap();
    for (p, g) in prompts.iter().zip(&batched) {
        let single = mlagent_engine::generate(&m, std::slice::from_ref(p), &opts, None, &dev).unwrap();
        assert_eq!(single[0].token_ids, g.token_ids, "prompt {p:?}");
    }
}

#[test]
fn kv_cache_decode_equals_full_forward() {
    let m = model();
    let dev = Default::default();
    // Two left-padded rows; prefill 5 positions, then decode 4 tokens one at a time.
    let full_rows: Vec<Vec<u32>> = vec![vec![11, 22, 33, 44, 55, 66, 77, 88, 99], vec![3, 1, 4, 1, 5, 9, 2]];
    let full = left_padded_input::<B>(&full_rows, 0, &dev);
    let want = m.forward(&full, None).into_data().to_vec::<f32>().unwrap();
    let t = 9;
    let v = m.vocab_size();
    let ids = full.input_ids.clone().into_data().convert::<i64>().to_vec::<i64>().unwrap();
    let pos = full.positions.clone().into_data().convert::<i64>().to_vec::<i64>().unwrap();
    let slice = |from: usize, len: usize| -> ForwardInput<B> {
        let pick = |x: &Vec<i64>| -> Vec<i64> { (0..2).flat_map(|r| x[r * t + from..r * t + from + len].to_vec()).collect() };
        ForwardInput {
            input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(pick(&ids), [2, len]), &dev),
            positions: Tensor::<B, 2, Int>::from_data(TensorData::new(pick(&pos), [2, len]), &dev),
            pad_lens: full.pad_lens.clone(),
        }
    };
    let mut cache = KvCache::new(m.num_layers());
    let mut got = vec![vec![]; 2];
    let first = m.forward(&slice(0, 5), Some(&mut cache)).into_data().to_vec::<f32>().unwrap();
    for r in 0..2 {
        got[r].extend_from_slice(&first[r * 5 * v..(r + 1) * 5 * v]);
    }
    for step in 5..t {
        let l = m.forward(&slice(step, 1), Some(&mut cache)).into_data().to_vec::<f32>().unwrap();
        for r in 0..2 {
            got[r].extend_from_slice(&l[r * v..(r + 1) * v]);
        }
    }
    for r in 0..2 {
        let pad = full.pad_lens.as_ref().unwrap()[r];
        for i in pad..t {
            let a = &got[r][i * v..(i + 1) * v];
            let w = &want[(r * t + i) * v..(r * t + i + 1) * v];
            let d = a.iter().zip(w).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(d < 1e-4, "row {r} position {i}: cache vs full differ by {d}");
        }
    }
}

#[test]
fn chat_template_matches_hf_golden() {
    let tok = TextTokenizer::from_dir(&fixture("qwen-tokenizer")).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen-tokenizer").join("chat_template_golden.json")).unwrap()).unwrap();
    for case in golden.as_array().unwrap() {
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let (text, ids) = tok.chat_ids_json(&case["messages"], add).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap());
        let want: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want);
    }
    assert_eq!(tok.eos_id(), Some(151645));
}
