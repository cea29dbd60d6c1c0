//! Teacher-forced validation of an SFT model: loss and next-token accuracy on the labelled
//! (assistant) tokens of samples, and the share of samples whose every labelled token is the
//! model's argmax — the samples greedy decoding would reproduce exactly.

use super::data::Sample;
use super::loss::label_nll_sum;
use super::trainer::micro_batch;
use burn::tensor::{ElementConversion, Int, Tensor};
use mlagent_engine::Qwen2;
use mlagent_kernels::KernelBackend;

/// Teacher-forced statistics over a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    /// Samples with at least one labelled token.
    pub samples: usize,
    /// Labelled tokens.
    pub tokens: usize,
    /// Token-mean cross-entropy.
    pub loss: f64,
    /// Share of labelled tokens whose argmax is the target.
    pub token_accuracy: f64,
    /// Share of samples with every labelled token right (greedy would reproduce the action).
    pub exact: f64,
}

/// Per sample of a batch: (labelled tokens, of them right), from the argmax of each labelled
/// position in order.
///
/// # Shapes
/// - `argmax`: `[N]`, `targets`: `[N]`; `counts[r]` labelled positions belong to row `r`, in order
fn per_row_hits(argmax: &[i64], targets: &[i64], counts: &[usize]) -> Vec<(usize, usize)> {
    let mut at = 0;
    counts
        .iter()
        .map(|&n| {
            let hits = (at..at + n).filter(|&i| argmax[i] == targets[i]).count();
            at += n;
            (n, hits)
        })
        .collect()
}

/// Runs `model` over `samples` in micro-batches of `batch` (no gradients).
pub fn validate<B: KernelBackend>(model: &Qwen2<B>, samples: &[Sample], batch: usize, device: &B::Device) -> Validation {
    let order: Vec<usize> = {
        // Similar lengths together: less padding.
        let mut o: Vec<usize> = (0..samples.len()).collect();
        o.sort_by_key(|&i| samples[i].ids.len());
        o
    };
    let (mut nll, mut tokens, mut hits, mut exact, mut counted) = (0.0f64, 0usize, 0usize, 0usize, 0usize);
    for rows in order.chunks(batch.max(1)) {
        let (input, labels) = micro_batch::<B>(samples, rows, device);
        let Some((at, targets)) = labels else { continue };
        let hidden = model.forward_hidden(&input, None); // [B, T, E]
        let logits = model.logits_at(hidden, at); // [N, V]
        let n = logits.dims()[0];
        let argmax: Tensor<B, 1, Int> = logits.clone().argmax(1).reshape([n]);
        nll += label_nll_sum(logits, targets.clone()).into_scalar().elem::<f64>();
        let argmax: Vec<i64> = argmax.into_data().convert::<i64>().to_vec().expect("int data");
        let targets: Vec<i64> = targets.into_data().convert::<i64>().to_vec().expect("int data");
        let counts: Vec<usize> = rows.iter().map(|&r| samples[r].label_count()).collect();
        for (n, h) in per_row_hits(&argmax, &targets, &counts) {
            if n == 0 {
                continue;
            }
            counted += 1;
            tokens += n;
            hits += h;
            exact += usize::from(h == n);
        }
    }
    let per = |x: f64, d: usize| if d == 0 { 0.0 } else { x / d as f64 };
    Validation {
        samples: counted,
        tokens,
        loss: per(nll, tokens),
        token_accuracy: per(hits as f64, tokens),
        exact: per(exact as f64, counted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use mlagent_engine::io::init_random;
    use mlagent_engine::preset::Preset;

    #[test]
    fn hits_are_split_by_row() {
        let argmax = [1, 2, 3, 4, 5];
        let targets = [1, 0, 3, 4, 5];
        assert_eq!(per_row_hits(&argmax, &targets, &[2, 0, 3]), vec![(2, 1), (0, 0), (3, 3)]);
    }

    #[test]
    fn agrees_with_a_sample_by_sample_run_and_counts_only_labels() {
        let config = Preset::Tiny.config();
        let dev = Default::default();
        let model = init_random::<Flex>(&config, 3, 0.02, burn::tensor::FloatDType::F32, &dev);
        let sample = |len: usize, first_label: usize| Sample {
            ids: (0..len as u32).map(|i| (i * 37 + len as u32) % 8000 + 3).collect(),
            labels: (0..len).map(|i| i >= first_label).collect(),
        };
        let samples = vec![sample(9, 6), sample(14, 4), sample(5, 5), sample(7, 2)];
        let all = validate(&model, &samples, 3, &dev);
        // Sample 2 has no labelled token after the first: it does not count.
        assert_eq!(all.samples, 3);
        assert_eq!(all.tokens, 3 + 10 + 5);
        let one: Vec<Validation> = [0, 1, 3].iter().map(|&i| validate(&model, &samples[i..i + 1], 1, &dev)).collect();
        let tokens: usize = one.iter().map(|v| v.tokens).sum();
        let loss = one.iter().map(|v| v.loss * v.tokens as f64).sum::<f64>() / tokens as f64;
        assert!((loss - all.loss).abs() < 1e-4, "{loss} vs {}", all.loss);
        // A random model is near uniform over 8192 tokens.
        assert!((all.loss - (8192f64).ln()).abs() < 0.5, "{}", all.loss);
        assert!(all.token_accuracy < 0.2);
    }
}
