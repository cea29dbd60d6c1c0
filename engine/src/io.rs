//! Building a [`Qwen2`] from an HF model directory, from random weights, and saving it back as an
//! HF model directory that transformers loads.

use crate::config::{Qwen2Config, StorageDType};
use crate::error::{EngineError, Result};
use crate::model::{DecoderLayer, Embedding, Linear, Mlp, Qwen2, Qwen2Backbone, RmsNorm, Rope, SelfAttention};
use crate::weights::{WeightFiles, save_safetensors, to_device};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use chacha20::ChaCha12Rng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Value-head file written beside the HF weights (transformers ignores it).
pub const VALUE_HEAD_FILE: &str = "value_head.safetensors";

/// Where the weights of one tensor come from.
trait Source<B: Backend> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>>;
}

struct FileSource<'a, B: Backend> {
    files: &'a mut WeightFiles,
    dtype: FloatDType,
    device: &'a B::Device,
}

impl<B: Backend> Source<B> for FileSource<'_, B> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.files.tensor(name, shape, self.dtype, self.device)
    }
}

/// Random init as HF `Qwen2PreTrainedModel._init_weights`: N(0, σ²) matrices, zero biases, unit norms.
struct RandomSource<'a, B: Backend> {
    rng: ChaCha12Rng,
    std: f32,
    dtype: FloatDType,
    device: &'a B::Device,
}

impl<B: Backend> Source<B> for RandomSource<'_, B> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            normals(&mut self.rng, n, self.std)
        };
        Ok(to_device(values, shape, self.dtype, self.device))
    }
}

/// `n` draws of N(0, `std`²): exactly the values of `n` sequential [`normal`] calls on `rng`
/// (which it leaves after them), computed in parallel chunks. Each draw reads two `u64`, four
/// 32-bit words of the ChaCha stream, so chunk `c` starts at word `start + 4·c·CHUNK`.
fn normals(rng: &mut ChaCha12Rng, n: usize, std: f32) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let (start, seed, stream) = (rng.get_word_pos(), rng.get_seed(), rng.get_stream());
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut r = ChaCha12Rng::from_seed(seed);
        r.set_stream(stream);
        r.set_word_pos(start + 4 * (c * CHUNK) as u128);
        for x in chunk {
            *x = normal(&mut r) * std;
        }
    });
    rng.set_word_pos(start + 4 * n as u128);
    out
}

/// One standard-normal draw (Box–Muller).
fn normal(rng: &mut impl RngExt) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn linear<B: Backend>(src: &mut impl Source<B>, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
    let weight = Param::from_tensor(src.get(&format!("{name}.weight"), [out, inp])?);
    let bias = if bias { Some(Param::from_tensor(src.get(&format!("{name}.bias"), [out])?)) } else { None };
    Ok(Linear { weight, bias })
}

fn norm<B: Backend>(src: &mut impl Source<B>, name: &str, e: usize, eps: f64) -> Result<RmsNorm<B>> {
    Ok(RmsNorm { weight: Param::from_tensor(src.get(&format!("{name}.weight"), [e])?), eps })
}

fn build<B: Backend>(c: &Qwen2Config, src: &mut impl Source<B>, dtype: FloatDType, device: &B::Device) -> Result<Qwen2<B>> {
    let (e, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (h, k, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let embed_tokens = Embedding { weight: Param::from_tensor(src.get("model.embed_tokens.weight", [v, e])?) };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(DecoderLayer {
            input_layernorm: norm(src, &format!("{p}.input_layernorm"), e, c.rms_norm_eps)?,
            self_attn: SelfAttention {
                q_proj: linear(src, &format!("{p}.self_attn.q_proj"), h * d, e, true)?,
                k_proj: linear(src, &format!("{p}.self_attn.k_proj"), k * d, e, true)?,
                v_proj: linear(src, &format!("{p}.self_attn.v_proj"), k * d, e, true)?,
                o_proj: linear(src, &format!("{p}.self_attn.o_proj"), e, h * d, false)?,
                num_heads: h,
                num_kv_heads: k,
                head_dim: d,
            },
            post_attention_layernorm: norm(src, &format!("{p}.post_attention_layernorm"), e, c.rms_norm_eps)?,
            mlp: Mlp {
                gate_proj: linear(src, &format!("{p}.mlp.gate_proj"), f, e, false)?,
                up_proj: linear(src, &format!("{p}.mlp.up_proj"), f, e, false)?,
                down_proj: linear(src, &format!("{p}.mlp.down_proj"), e, f, false)?,
            },
        });
    }
    let model = Qwen2Backbone { embed_tokens, layers, norm: norm(src, "model.norm", e, c.rms_norm_eps)? };
    let lm_head = if c.tie_word_embeddings { None } else { Some(linear(src, "lm_head", v, e, false)?) };
    let rope = Rope::new(d, c.rope_theta, c.max_position_embeddings, dtype, device);
    Ok(Qwen2 { model, lm_head, value_head: None, rope })
}

/// Loads `dir` (config.json + safetensors, single or sharded, plus `value_head.safetensors` if
/// present) onto `device`, computing in `dtype`.
pub fn load<B: Backend>(dir: &Path, dtype: FloatDType, device: &B::Device) -> Result<(Qwen2<B>, Qwen2Config)> {
    if !dir.is_dir() {
        return Err(EngineError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let config = Qwen2Config::from_dir(dir)?;
    let mut files = WeightFiles::open(dir)?;
    if config.tie_word_embeddings && files.contains("lm_head.weight") {
        // Some exporters write the tied matrix twice; transformers ignores the copy, and so do we.
        files.skip("lm_head.weight");
    }
    for name in files.names() {
        if name.ends_with("rotary_emb.inv_freq") {
            files.skip(&name); // a buffer older transformers saved; recomputed from rope_theta
        }
    }
    let mut model = build(&config, &mut FileSource { files: &mut files, dtype, device }, dtype, device)?;
    files.finish()?;
    let vh = dir.join(VALUE_HEAD_FILE);
    if vh.is_file() {
        let mut files = WeightFiles::from_files(vec![vh])?;
        let e = config.hidden_size;
        model.value_head = Some(linear(&mut FileSource { files: &mut files, dtype, device }, "v_head", 1, e, true)?);
        files.finish()?;
    }
    Ok((model, config))
}

/// A randomly initialised model (N(0, `std`²) weights), deterministic for `seed`.
pub fn init_random<B: Backend>(config: &Qwen2Config, seed: u64, std: f32, dtype: FloatDType, device: &B::Device) -> Qwen2<B> {
    let mut src = RandomSource { rng: ChaCha12Rng::seed_from_u64(seed), std, dtype, device };
    build(config, &mut src, dtype, device).expect("random source never fails")
}

/// Adds a freshly initialised value head (N(0, `std`²) weight, zero bias) if there is none.
pub fn add_value_head<B: Backend>(model: &mut Qwen2<B>, seed: u64, std: f32, device: &B::Device) {
    if model.value_head.is_some() {
        return;
    }
    let e = model.model.embed_tokens.weight.dims()[1];
    let dtype = model.model.embed_tokens.weight.val().dtype().into();
    let mut src = RandomSource { rng: ChaCha12Rng::seed_from_u64(seed), std, dtype, device };
    model.value_head = Some(linear(&mut src, "v_head", 1, e, true).expect("random source never fails"));
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    let values = t.cast(FloatDType::F32).into_data().to_vec::<f32>().expect("f32 data");
    (shape, values)
}

fn put_linear<B: Backend>(out: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>, name: &str, l: &Linear<B>) {
    out.insert(format!("{name}.weight"), host(l.weight.val()));
    if let Some(b) = &l.bias {
        out.insert(format!("{name}.bias"), host(b.val()));
    }
}

/// The model's tensors under their HF names (value head excluded), as host f32.
pub fn state_dict<B: Backend>(model: &Qwen2<B>) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    out.insert("model.embed_tokens.weight".into(), host(model.model.embed_tokens.weight.val()));
    for (i, l) in model.model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.insert(format!("{p}.input_layernorm.weight"), host(l.input_layernorm.weight.val()));
        out.insert(format!("{p}.post_attention_layernorm.weight"), host(l.post_attention_layernorm.weight.val()));
        let a = &l.self_attn;
        for (n, lin) in [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)] {
            put_linear(&mut out, &format!("{p}.self_attn.{n}"), lin);
        }
        for (n, lin) in [("gate_proj", &l.mlp.gate_proj), ("up_proj", &l.mlp.up_proj), ("down_proj", &l.mlp.down_proj)] {
            put_linear(&mut out, &format!("{p}.mlp.{n}"), lin);
        }
    }
    out.insert("model.norm.weight".into(), host(model.model.norm.weight.val()));
    if let Some(head) = &model.lm_head {
        put_linear(&mut out, "lm_head", head);
    }
    out
}

/// Writes `config.json`, `model.safetensors` (in `dtype`), `generation_config.json` when EOS ids
/// are known, and `value_head.safetensors` when the model has one, each file atomically.
pub fn save<B: Backend>(model: &Qwen2<B>, config: &Qwen2Config, dir: &Path, dtype: StorageDType, eos: &[u32]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let json = serde_json::to_string_pretty(&config.to_json(dtype)).expect("json");
    write_atomic(&dir.join("config.json"), json.as_bytes())?;
    if !eos.is_empty() {
        let gen_cfg = serde_json::json!({"eos_token_id": eos, "do_sample": false});
        write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gen_cfg).expect("json").as_bytes())?;
    }
    save_safetensors(&dir.join(crate::weights::SINGLE_FILE), &state_dict(model), dtype)?;
    if let Some(vh) = &model.value_head {
        let mut t = BTreeMap::new();
        put_linear(&mut t, "v_head", vh);
        save_safetensors(&dir.join(VALUE_HEAD_FILE), &t, StorageDType::F32)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel draws are the sequential ones: the same values as `n` calls of the Box–Muller
    /// draw on rand's `StdRng` (ChaCha12) from the same seed, across chunk boundaries and several
    /// tensors in a row (so models initialised before this change keep their weights).
    #[test]
    fn parallel_normals_equal_sequential_std_rng() {
        let mut seq = rand::rngs::StdRng::seed_from_u64(7);
        let mut par = ChaCha12Rng::seed_from_u64(7);
        for n in [3, (1 << 16) + 5, 1 << 17, 11] {
            let want: Vec<f32> = (0..n).map(|_| normal(&mut seq) * 0.02).collect();
            assert_eq!(normals(&mut par, n, 0.02), want, "n = {n}");
        }
    }
}
