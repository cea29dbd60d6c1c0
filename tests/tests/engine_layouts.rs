//! Checkpoint layouts beyond the fixture's (tied embeddings, bf16 weights, sharded files,
//! transformers-4.x config keys, our own saves) and bad input: each must load and agree, or fail
//! with one error that names the culprit.

use burn::backend::Flex;
use burn::tensor::FloatDType;
use mlagent_engine::generate::left_padded_input;
use mlagent_engine::weights::save_safetensors;
use mlagent_engine::{EngineError, Qwen2, StorageDType};
use mlagent_tests::{copy_dir, fixture};
use std::collections::BTreeMap;
use std::path::Path;

type B = Flex;
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn load(dir: &Path) -> Result<Qwen2<B>, EngineError> {
    mlagent_engine::io::load::<B>(dir, FloatDType::F32, &Default::default()).map(|(m, _)| m)
}

fn logits(m: &Qwen2<B>) -> Vec<f32> {
    let prompts = vec![vec![1, 2, 3, 40, 50, 60, 7], vec![500, 9, 11]];
    m.forward(&left_padded_input::<B>(&prompts, 0, &Default::default()), None).into_data().to_vec().unwrap()
}

fn fixture_tensors() -> Tensors {
    let mut w = mlagent_engine::weights::WeightFiles::open(&fixture("qwen2-tiny-a")).unwrap();
    let mut out = Tensors::new();
    for name in w.names() {
        let bytes = std::fs::read(fixture("qwen2-tiny-a").join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let shape = st.tensor(&name).unwrap().shape().to_vec();
        out.insert(name.clone(), (shape.clone(), w.read_f32(&name, &shape).unwrap()));
    }
    out
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn sharded_weights_load_identically() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let all = fixture_tensors();
    let (mut a, mut b) = (Tensors::new(), Tensors::new());
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        let file = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(name.clone(), file.into());
        if i % 2 == 0 { a.insert(name, t) } else { b.insert(name, t) };
    }
    save_safetensors(&tmp.path().join("model-00001-of-00002.safetensors"), &a, StorageDType::F32).unwrap();
    save_safetensors(&tmp.path().join("model-00002-of-00002.safetensors"), &b, StorageDType::F32).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(tmp.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&load(tmp.path()).unwrap()), logits(&load(&fixture("qwen2-tiny-a")).unwrap()));
}

#[test]
fn transformers_4x_config_keys_load_identically() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tmp.path());
    edit_config(tmp.path(), |v| {
        let theta = v["rope_parameters"]["rope_theta"].clone();
        let m = v.as_object_mut().unwrap();
        m.remove("rope_parameters");
        m.remove("dtype");
        m.insert("rope_theta".into(), theta);
        m.insert("torch_dtype".into(), "float32".into());
        m.insert("rope_scaling".into(), serde_json::Value::Null);
    });
    assert_eq!(logits(&load(tmp.path()).unwrap()), logits(&load(&fixture("qwen2-tiny-a")).unwrap()));
}

#[test]
fn tied_embeddings_use_the_embedding_as_lm_head() {
    // Untied model whose lm_head equals the embedding, vs. the tied layout without lm_head.
    let mut t = fixture_tensors();
    let embed = t["model.embed_tokens.weight"].clone();
    t.insert("lm_head.weight".into(), embed);
    let untied = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), untied.path());
    save_safetensors(&untied.path().join("model.safetensors"), &t, StorageDType::F32).unwrap();
    t.remove("lm_head.weight");
    let tied = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tied.path());
    save_safetensors(&tied.path().join("model.safetensors"), &t, StorageDType::F32).unwrap();
    edit_config(tied.path(), |v| v["tie_word_embeddings"] = true.into());
    let m = load(tied.path()).unwrap();
    assert!(m.lm_head.is_none());
    assert_eq!(logits(&m), logits(&load(untied.path()).unwrap()));
    // An untied config without lm_head.weight is an error naming the tensor.
    edit_config(tied.path(), |v| v["tie_word_embeddings"] = false.into());
    let err = load(tied.path()).unwrap_err().to_string();
    assert!(err.contains("missing tensor lm_head.weight"), "{err}");
}

#[test]
fn bf16_and_f16_weights_load_as_their_rounded_values() {
    let t = fixture_tensors();
    for (dtype, tol) in [(StorageDType::BF16, 0.1f32), (StorageDType::F16, 0.02)] {
        let low = tempfile::tempdir().unwrap();
        copy_dir(&fixture("qwen2-tiny-a"), low.path());
        save_safetensors(&low.path().join("model.safetensors"), &t, dtype).unwrap();
        // The same values, rounded through the low-precision type, stored in f32.
        let rounded: Tensors = t
            .iter()
            .map(|(n, (s, v))| {
                let r = v
                    .iter()
                    .map(|&x| match dtype {
                        StorageDType::BF16 => half::bf16::from_f32(x).to_f32(),
                        _ => half::f16::from_f32(x).to_f32(),
                    })
                    .collect();
                (n.clone(), (s.clone(), r))
            })
            .collect();
        let exact = tempfile::tempdir().unwrap();
        copy_dir(&fixture("qwen2-tiny-a"), exact.path());
        save_safetensors(&exact.path().join("model.safetensors"), &rounded, StorageDType::F32).unwrap();
        let a = logits(&load(low.path()).unwrap());
        assert_eq!(a, logits(&load(exact.path()).unwrap()), "{dtype:?}");
        let d = max_diff(&a, &logits(&load(&fixture("qwen2-tiny-a")).unwrap()));
        assert!(d < tol, "{dtype:?} weights moved logits by {d}");
    }
}

#[test]
fn saved_model_reloads_identically_with_value_head() {
    let dev = Default::default();
    let (mut m, cfg) = mlagent_engine::io::load::<B>(&fixture("qwen2-tiny-a"), FloatDType::F32, &dev).unwrap();
    mlagent_engine::io::add_value_head(&mut m, 3, 0.02, &dev);
    let tmp = tempfile::tempdir().unwrap();
    mlagent_engine::io::save(&m, &cfg, tmp.path(), StorageDType::F32, &[]).unwrap();
    let back = load(tmp.path()).unwrap();
    assert_eq!(logits(&back), logits(&m));
    let input = left_padded_input::<B>(&[vec![1, 2, 3]], 0, &dev);
    let v1 = m.values(m.forward_hidden(&input, None)).unwrap().into_data().to_vec::<f32>().unwrap();
    let v2 = back.values(back.forward_hidden(&input, None)).unwrap().into_data().to_vec::<f32>().unwrap();
    assert_eq!(v1, v2);
    // transformers reads the config back: same keys spelled as the source (5.x here).
    let cfg2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg2["rope_parameters"]["rope_theta"], serde_json::json!(10000.0));
    assert_eq!(cfg2["dtype"], serde_json::json!("float32"));
}

#[test]
fn bad_inputs_fail_with_one_named_error() {
    let err = load(Path::new("/nonexistent/model")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model") && err.contains("not found"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tmp.path());
    let st = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tmp.path());
    edit_config(tmp.path(), |v| v["rope_parameters"]["rope_type"] = "dynamic".into());
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("dynamic"), "{err}");

    // An extra tensor is named.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2-tiny-a"), tmp.path());
    let mut t = fixture_tensors();
    t.insert("model.layers.9.mlp.up_proj.weight".into(), (vec![2], vec![0.0, 1.0]));
    save_safetensors(&tmp.path().join("model.safetensors"), &t, StorageDType::F32).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("unexpected tensor model.layers.9.mlp.up_proj.weight"), "{err}");

    // A misshaped tensor is named with both shapes.
    let mut t = fixture_tensors();
    t.insert("model.norm.weight".into(), (vec![3], vec![1.0; 3]));
    save_safetensors(&tmp.path().join("model.safetensors"), &t, StorageDType::F32).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model.norm.weight has shape [3], expected [64]"), "{err}");

    // Token ids beyond the vocabulary.
    let m = load(&fixture("qwen2-tiny-a")).unwrap();
    let opts = mlagent_engine::GenerateOptions {
        max_new_tokens: 2,
        sampling: mlagent_engine::SamplingParams::greedy(),
        seed: 0,
        eos_ids: vec![],
        stop_strings: vec![],
        pad_id: 0,
    };
    let err = mlagent_engine::generate(&m, &[vec![1, 512]], &opts, None, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("token id 512") && err.contains("512"), "{err}");

    // A tokenizer without a chat template.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("qwen-tokenizer").join("tokenizer.json"), tmp.path().join("tokenizer.json")).unwrap();
    let tok = mlagent_engine::TextTokenizer::from_dir(tmp.path()).unwrap();
    let err = tok.apply_chat_template(&[mlagent_engine::ChatMessage::new("user", "hi")], true).unwrap_err().to_string();
    assert!(err.contains("no chat_template"), "{err}");
}
