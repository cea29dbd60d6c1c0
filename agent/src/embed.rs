//! Text embeddings, cosine distance and greedy farthest-point selection of the most diverse ideas.
//!
//! ML-Agent (arXiv 2505.23723, §3.1) embeds every candidate idea, computes pairwise distances and keeps the most
//! diverse ones. An [`Embedder`] maps texts to vectors: [`TfIdf`] is the deterministic offline default (character
//! n-grams plus word unigrams, fitted on the texts of one call), [`OpenAiEmbedder`] calls an OpenAI-compatible
//! `/embeddings` endpoint, and the trainers supply mean-pooled hidden states of a local model. [`farthest_point`] is the
//! greedy max–min selection (Gonzalez 1985), a 2-approximation of the subset maximising the smallest pairwise distance.

use crate::http::Endpoint;
use std::collections::BTreeMap;
use std::time::Duration;

/// Embedding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The URL is not `http://host[:port]/path`.
    #[error("unsupported embeddings URL `{0}` (expected http://host:port/v1; use a local proxy for https)")]
    Url(String),
    /// Connecting, sending or receiving failed.
    #[error("embeddings request to {url} failed: {source}")]
    Io {
        /// The endpoint.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("embeddings endpoint answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The reply is not an embeddings list of the right length.
    #[error("embeddings reply is malformed: {0}")]
    Reply(String),
    /// A model-backed embedder failed (the trainers' implementations).
    #[error("embedding model failed: {0}")]
    Model(String),
}

/// Text → vector.
pub trait Embedder: Send + Sync {
    /// One vector per text, all of the same length.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// TF-IDF over character n-grams (of each lower-cased word padded with spaces) and word unigrams, sublinear term
/// frequency, smoothed idf, L2-normalised. The vocabulary is fitted on the texts of each call and ordered, so the
/// result depends only on the texts.
#[derive(Debug, Clone)]
pub struct TfIdf {
    /// Character n-gram lengths.
    pub ngrams: std::ops::RangeInclusive<usize>,
}

impl Default for TfIdf {
    fn default() -> Self {
        TfIdf { ngrams: 3..=4 }
    }
}

impl TfIdf {
    fn terms(&self, text: &str) -> BTreeMap<String, f32> {
        let mut tf: BTreeMap<String, f32> = BTreeMap::new();
        let lower = text.to_lowercase();
        for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            *tf.entry(format!("w:{word}")).or_default() += 1.0;
            let padded: Vec<char> = format!(" {word} ").chars().collect();
            for n in self.ngrams.clone() {
                for g in padded.windows(n) {
                    *tf.entry(format!("c:{}", g.iter().collect::<String>())).or_default() += 1.0;
                }
            }
        }
        tf
    }
}

impl Embedder for TfIdf {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let docs: Vec<BTreeMap<String, f32>> = texts.iter().map(|t| self.terms(t)).collect();
        let mut df: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &docs {
            for k in d.keys() {
                *df.entry(k.as_str()).or_default() += 1;
            }
        }
        let index: BTreeMap<&str, usize> = df.keys().enumerate().map(|(i, k)| (*k, i)).collect();
        let n = docs.len() as f32;
        Ok(docs
            .iter()
            .map(|d| {
                let mut v = vec![0.0f32; index.len()];
                for (k, tf) in d {
                    let idf = ((1.0 + n) / (1.0 + df[k.as_str()] as f32)).ln() + 1.0;
                    v[index[k.as_str()]] = (1.0 + tf.ln()) * idf;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}

/// An OpenAI-compatible `/v1/embeddings` client (plain HTTP; see [`crate::http`]).
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    endpoint: Endpoint,
    model: String,
    api_key: Option<String>,
    batch: usize,
}

impl OpenAiEmbedder {
    /// `base_url` like `http://127.0.0.1:8000/v1`; `api_key_env` names the environment variable holding the key.
    pub fn new(base_url: &str, model: &str, api_key_env: Option<&str>) -> Result<Self, EmbedError> {
        let endpoint = Endpoint::parse(base_url, "embeddings").ok_or_else(|| EmbedError::Url(base_url.into()))?;
        let api_key = api_key_env.and_then(|v| std::env::var(v).ok()).filter(|k| !k.is_empty());
        Ok(OpenAiEmbedder { endpoint, model: model.into(), api_key, batch: 64 })
    }
}

impl Embedder for OpenAiEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch) {
            let body = serde_json::json!({"model": self.model, "input": chunk}).to_string();
            let (status, text) = self
                .endpoint
                .post_json(&body, self.api_key.as_deref(), Duration::from_secs(300))
                .map_err(|source| EmbedError::Io { url: self.endpoint.url(), source })?;
            if !(200..300).contains(&status) {
                return Err(EmbedError::Status { status, body: text.chars().take(500).collect() });
            }
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| EmbedError::Reply(e.to_string()))?;
            let data = v["data"].as_array().ok_or_else(|| EmbedError::Reply("no `data` array".into()))?;
            let mut rows: Vec<(usize, Vec<f32>)> = Vec::with_capacity(data.len());
            for (i, d) in data.iter().enumerate() {
                let idx = d["index"].as_u64().map_or(i, |x| x as usize);
                let emb = d["embedding"]
                    .as_array()
                    .ok_or_else(|| EmbedError::Reply(format!("item {i} has no `embedding`")))?
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| EmbedError::Reply(format!("item {i}: non-numeric embedding")))?;
                rows.push((idx, emb));
            }
            rows.sort_by_key(|r| r.0);
            if rows.len() != chunk.len() {
                return Err(EmbedError::Reply(format!("{} embeddings for {} inputs", rows.len(), chunk.len())));
            }
            out.extend(rows.into_iter().map(|r| r.1));
        }
        Ok(out)
    }
}

/// 1 − cosine similarity (0 for identical directions, 1 for orthogonal; a zero vector is at distance 1 from all).
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        return 1.0;
    }
    (1.0 - dot / (na.sqrt() * nb.sqrt())).max(0.0) as f32
}

/// The full pairwise cosine-distance matrix.
pub fn distance_matrix(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = vectors.len();
    let mut d = vec![vec![0.0f32; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let x = cosine_distance(&vectors[i], &vectors[j]);
            d[i][j] = x;
            d[j][i] = x;
        }
    }
    d
}

/// Greedy farthest-point (max–min) selection of `k` indices: start with the point of largest mean distance to all
/// others, then repeatedly add the point whose distance to its nearest selected point is largest (ties: lowest index).
/// Returns indices in selection order; all of them when `k ≥ n`.
pub fn farthest_point(dist: &[Vec<f32>], k: usize) -> Vec<usize> {
    let n = dist.len();
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let mean = |i: usize| dist[i].iter().sum::<f32>();
    let first = (0..n).fold(0, |best, i| if mean(i) > mean(best) { i } else { best });
    let mut chosen = vec![first];
    let mut nearest: Vec<f32> = dist[first].clone();
    while chosen.len() < k.min(n) {
        let next = (0..n)
            .filter(|i| !chosen.contains(i))
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if nearest[b] >= nearest[i] => Some(b),
                _ => Some(i),
            })
            .expect("fewer chosen than points");
        chosen.push(next);
        for i in 0..n {
            nearest[i] = nearest[i].min(dist[next][i]);
        }
    }
    chosen
}

/// Mean distance over all pairs of `indices` (0 for fewer than two).
pub fn mean_pairwise_distance(dist: &[Vec<f32>], indices: &[usize]) -> f64 {
    let mut total = 0.0;
    let mut pairs = 0usize;
    for (a, &i) in indices.iter().enumerate() {
        for &j in &indices[a + 1..] {
            total += f64::from(dist[i][j]);
            pairs += 1;
        }
    }
    if pairs == 0 { 0.0 } else { total / pairs as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten topics with ten near-paraphrases each: the ten most diverse must be one per topic.
    fn clustered_pool() -> (Vec<String>, Vec<usize>) {
        let topics = [
            "gradient boosted decision trees with shrinkage",
            "convolutional network on image patches",
            "k nearest neighbours voting classifier",
            "ridge penalty closed form regression",
            "mirror flip augmentation of pictures",
            "oversample minority labels for balance",
            "hold out validation split check",
            "bag bootstrap resampled ensemble members",
            "temperature scaling calibrated probabilities",
            "bag of words token frequency vectors",
        ];
        let mut texts = Vec::new();
        let mut cluster = Vec::new();
        for (c, t) in topics.iter().enumerate() {
            for v in 0..10 {
                texts.push(format!("{t} variant {}", ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][v]));
                cluster.push(c);
            }
        }
        (texts, cluster)
    }

    #[test]
    fn farthest_point_recovers_one_idea_per_cluster() {
        let (texts, cluster) = clustered_pool();
        let v = TfIdf::default().embed(&texts).unwrap();
        let d = distance_matrix(&v);
        let picked = farthest_point(&d, 10);
        let mut clusters: Vec<usize> = picked.iter().map(|&i| cluster[i]).collect();
        clusters.sort_unstable();
        assert_eq!(clusters, (0..10).collect::<Vec<_>>(), "picked {picked:?}");
        // The selection is more diverse than the first ten (one cluster).
        assert!(mean_pairwise_distance(&d, &picked) > mean_pairwise_distance(&d, &(0..10).collect::<Vec<_>>()) + 0.3);
    }

    #[test]
    fn farthest_point_on_points_of_a_line() {
        // 1-D points embedded as angles: 0°, 1°, 2°, 45°, 88°, 89°, 90° → the extremes and the middle.
        let angles = [0.0f32, 1.0, 2.0, 45.0, 88.0, 89.0, 90.0];
        let v: Vec<Vec<f32>> = angles.iter().map(|a| vec![a.to_radians().cos(), a.to_radians().sin()]).collect();
        let mut picked = farthest_point(&distance_matrix(&v), 3);
        picked.sort_unstable();
        assert_eq!(picked, vec![0, 3, 6]);
        assert_eq!(farthest_point(&distance_matrix(&v), 99).len(), 7);
    }

    #[test]
    fn tfidf_is_deterministic_and_normalised() {
        let texts = vec!["ridge regression".to_string(), "ridge regressor".into(), "image flips".into()];
        let a = TfIdf::default().embed(&texts).unwrap();
        assert_eq!(a, TfIdf::default().embed(&texts).unwrap());
        for v in &a {
            assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(cosine_distance(&a[0], &a[1]) < cosine_distance(&a[0], &a[2]));
        assert_eq!(cosine_distance(&a[0], &a[0]), 0.0);
        assert_eq!(cosine_distance(&[0.0, 0.0], &a[0][..2]), 1.0);
    }

    #[test]
    fn openai_embeddings_client() {
        let reply = r#"{"data":[{"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}]}"#.to_string();
        let (port, server) = crate::http::serve_once(reply);
        let e = OpenAiEmbedder::new(&format!("http://127.0.0.1:{port}/v1"), "emb", None).unwrap();
        let v = e.embed(&["a".into(), "b".into()]).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /v1/embeddings HTTP/1.1"), "{req}");
        assert!(req.contains(r#""input":["a","b"]"#), "{req}");
        assert!(matches!(OpenAiEmbedder::new("https://x/v1", "m", None), Err(EmbedError::Url(_))));
    }
}
