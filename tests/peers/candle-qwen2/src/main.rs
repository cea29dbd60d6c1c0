//! candle 0.11.1's qwen2 on the CPU, f32, batch 1, random-normal weights of a given shape:
//! prefill of N tokens (KV cache filled, last-position logits) and greedy single-token decode.
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::qwen2::{Config, ModelForCausalLM};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map(String::as_str).unwrap_or("tiny");
    let tokens: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let decode: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let repeats: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (vocab, hidden, inter, layers, heads, kv) = match shape {
        "tiny" => (8192, 256, 704, 4, 4, 2),
        _ => (151_936, 896, 4864, 24, 14, 2),
    };
    let cfg: Config = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 32768,
        "sliding_window": 32768, "max_window_layers": layers, "tie_word_embeddings": true, "rope_theta": 1e6,
        "rms_norm_eps": 1e-6, "use_sliding_window": false, "hidden_act": "silu"
    })).unwrap();
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    // The VarMap creates every tensor the model asks for with candle-nn's default inits
    // (Kaiming-normal linears, N(0, 1) embeddings, unit norms).
    let mut model = ModelForCausalLM::new(&cfg, vb)?;
    let ids: Vec<u32> = (0..tokens).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    let mut pre = Vec::new();
    let mut dec = Vec::new();
    for r in 0..=repeats {
        model.clear_kv_cache();
        let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        let t = Instant::now();
        let logits = model.forward(&input, 0)?; // [1, 1, V]
        let mut next = logits.squeeze(0)?.squeeze(0)?.argmax(D::Minus1)?.to_scalar::<u32>()?;
        let p = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for s in 0..decode {
            let input = Tensor::new(&[next], &dev)?.unsqueeze(0)?;
            let logits = model.forward(&input, tokens + s)?;
            next = logits.squeeze(0)?.squeeze(0)?.argmax(D::Minus1)?.to_scalar::<u32>()?;
        }
        let d = t.elapsed().as_secs_f64();
        if r > 0 { pre.push(p); dec.push(d); } // run 0 is the warm-up
        eprintln!("run {r}: prefill {p:.3} s, decode {d:.3} s");
    }
    pre.sort_by(f64::total_cmp);
    dec.sort_by(f64::total_cmp);
    let (p, d) = (pre[pre.len() / 2], dec[dec.len() / 2]);
    println!("candle 0.11.1 qwen2 {shape}: prefill {tokens} tokens {:.1} tokens/s, decode {decode} tokens {:.1} tokens/s",
        tokens as f64 / p, decode as f64 / d);
    Ok(())
}
