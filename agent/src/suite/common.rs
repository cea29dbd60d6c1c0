//! Building blocks shared by the task generators: the generated-task container, starter scripts with their
//! configuration block, prototype-plus-noise samples, and number formatting.

use crate::csvio::Table;
use crate::rng::Rng;

/// A file of the public folder.
pub struct PublicFile {
    /// Path relative to `public/`.
    pub path: String,
    /// Content.
    pub content: String,
}

/// Everything a generator produces for one task.
pub struct Generated {
    /// description.md.
    pub description: String,
    /// Files copied into the agent's work folder (data, sample submission, starter script).
    pub public: Vec<PublicFile>,
    /// Private answers (first column: id).
    pub answers: Table,
    /// Predictions of the generating process itself (its noise-free values or Bayes labels); its score is `m_best`.
    pub oracle: Table,
    /// Data files the agent may not overwrite.
    pub read_only: Vec<String>,
}

impl Generated {
    /// Start with a description.
    pub fn new(description: String, answers: Table, oracle: Table) -> Self {
        Generated { description, public: Vec::new(), answers, oracle, read_only: Vec::new() }
    }

    /// Add a read-only data table.
    pub fn data(&mut self, path: &str, table: &Table) {
        self.public.push(PublicFile { path: path.into(), content: table.to_csv() });
        self.read_only.push(path.into());
    }

    /// Add the starter `train.py`.
    pub fn starter(&mut self, source: String) {
        self.public.push(PublicFile { path: "train.py".into(), content: source });
    }

    /// A sample submission: the answers' ids and header with one constant value per cell.
    pub fn sample_submission(&mut self, value: &str) {
        let mut t = Table::new(self.answers.header.clone());
        for r in &self.answers.rows {
            let mut row = vec![r[0].clone()];
            row.extend(std::iter::repeat_n(value.to_string(), r.len() - 1));
            t.push(row);
        }
        self.data("sample_submission.csv", &t);
    }
}

/// A starter template with its `# CONFIG` line replaced by configuration code.
pub fn starter(template: &str, config: &str) -> String {
    template.replacen("# CONFIG", config.trim(), 1)
}

/// Python list literal of strings.
pub fn py_list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

/// Fixed-precision number text (stable across platforms).
pub fn num(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.starts_with("-0") && s.trim_start_matches(['-', '0', '.']).is_empty() { s[1..].to_string() } else { s }
}

/// A class prototype: a smooth random pattern over `side × side × channels` (three Gaussian blobs per channel).
pub fn prototype(rng: &mut Rng, side: usize, channels: usize) -> Vec<f64> {
    let mut v = vec![0.0; side * side * channels];
    for c in 0..channels {
        let base = 0.4 * rng.normal();
        let blobs: Vec<(f64, f64, f64, f64)> = (0..3)
            .map(|_| (rng.range(0.0, side as f64), rng.range(0.0, side as f64), rng.range(0.8, 2.2), 1.5 * rng.normal()))
            .collect();
        for y in 0..side {
            for x in 0..side {
                let mut s = base;
                for &(cx, cy, sigma, amp) in &blobs {
                    let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                    s += amp * (-d2 / (2.0 * sigma * sigma)).exp();
                }
                v[c * side * side + y * side + x] = s;
            }
        }
    }
    v
}

/// A noisy sample of a prototype: shifted by up to one pixel, random contrast and brightness, pixel noise.
pub fn sample(rng: &mut Rng, proto: &[f64], side: usize, channels: usize, noise: f64, shift: bool) -> Vec<f64> {
    let (dx, dy) = if shift { (rng.below(3) as i64 - 1, rng.below(3) as i64 - 1) } else { (0, 0) };
    let contrast = rng.range(0.6, 1.4);
    let brightness = 0.5 * rng.normal();
    let mut out = vec![0.0; proto.len()];
    for c in 0..channels {
        for y in 0..side as i64 {
            for x in 0..side as i64 {
                let sx = (x - dx).clamp(0, side as i64 - 1) as usize;
                let sy = (y - dy).clamp(0, side as i64 - 1) as usize;
                let p = proto[c * side * side + sy * side + sx];
                out[c * side * side + y as usize * side + x as usize] = contrast * p + brightness + noise * rng.normal();
            }
        }
    }
    out
}

/// Map a sample to 0–255 integer pixel text.
pub fn pixels(v: &[f64]) -> Vec<String> {
    v.iter().map(|x| format!("{}", (128.0 + 45.0 * x).round().clamp(0.0, 255.0) as i64)).collect()
}

/// Logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
