//! Learning-rate schedule: linear warmup, then cosine decay to zero (Loshchilov & Hutter,
//! SGDR, arXiv 1608.03983, without restarts), as HF's `get_cosine_schedule_with_warmup`.

/// Learning rate at optimizer step `step` (0-based) of `total`, peaking at `peak` after `warmup`
/// steps: `peak·(step+1)/warmup` during warmup, then `peak·½(1 + cos(π·progress))`.
pub fn cosine_with_warmup(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_peak_and_decay() {
        assert!((cosine_with_warmup(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((cosine_with_warmup(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine_with_warmup(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine_with_warmup(55, 100, 10, 2.0) - 1.0).abs() < 1e-12);
        assert!(cosine_with_warmup(99, 100, 10, 1.0) < 1e-3);
        assert!((cosine_with_warmup(0, 10, 0, 3.0) - 3.0).abs() < 1e-12);
    }
}
