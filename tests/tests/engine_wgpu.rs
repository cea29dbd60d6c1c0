//! The engine on WGPU (a GPU if present, else Mesa lavapipe, which CI installs) against the HF
//! float64 reference. Shader compilation on lavapipe is slow, so this is one forward pass.

use burn::backend::Wgpu;
use burn::tensor::FloatDType;
use mlagent_engine::generate::left_padded_input;
use mlagent_tests::{fixture, read_tensor};

#[test]
fn wgpu_logits_match_hf_reference() {
    if !mlagent_engine::device::wgpu_available() {
        // Without any Vulkan/Metal/DX12 driver there is nothing to run on; CI installs lavapipe.
        eprintln!("SKIPPED: no wgpu adapter (install mesa-vulkan-drivers libvulkan1)");
        return;
    }
    let device = mlagent_engine::device::wgpu_device();
    let (model, _) = mlagent_engine::io::load::<Wgpu>(&fixture("qwen2-tiny-a"), FloatDType::F32, &device).unwrap();
    let ref_path = fixture("qwen2-tiny-a").join("reference.safetensors");
    let (shape, ids) = read_tensor(&ref_path, "padded_input_ids");
    let (_, mask) = read_tensor(&ref_path, "padded_attention_mask");
    let (_, want) = read_tensor(&ref_path, "padded_logits");
    let t = shape[1];
    let prompts: Vec<Vec<u32>> = (0..shape[0])
        .map(|r| (0..t).filter(|&i| mask[r * t + i] == 1.0).map(|i| ids[r * t + i] as u32).collect())
        .collect();
    let got = model.forward(&left_padded_input::<Wgpu>(&prompts, 0, &device), None).into_data().to_vec::<f32>().unwrap();
    let v = got.len() / (shape[0] * t);
    let mut worst = 0.0f64;
    for (pos, &m) in mask.iter().enumerate() {
        if m == 1.0 {
            for j in 0..v {
                worst = worst.max((got[pos * v + j] as f64 - want[pos * v + j]).abs());
            }
        }
    }
    assert!(worst < 1e-3, "wgpu logits differ from HF by {worst}");
}
