//! ogbn-arxiv (miniature): node classification on a citation graph, accuracy.
//!
//! Node features are noisy class means (features alone give a mediocre classifier); 80% of citations stay within a
//! subject area, so using the graph (label propagation, neighbour feature averaging) gives a large improvement.

use super::common::{Generated, num};
use crate::csvio::Table;
use crate::rng::Rng;

const GRAPH: &str = include_str!("starters/graph.py");

/// ogbn-arxiv: 1500 papers, 8 subject areas, 16 features, accuracy.
pub fn ogbn_arxiv(rng: &mut Rng) -> Generated {
    let (n, k, d) = (1500, 8, 16);
    let means: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| 0.7 * rng.normal()).collect()).collect();
    let labels: Vec<usize> = (0..n).map(|_| rng.weighted(&[3.0, 2.0, 2.0, 1.5, 1.0, 1.0, 0.8, 0.7])).collect();
    let mut feats = Table::new(std::iter::once("node_id".to_string()).chain((0..d).map(|j| format!("feat_{j}"))));
    for (i, &y) in labels.iter().enumerate() {
        feats.push(std::iter::once(i.to_string()).chain((0..d).map(|j| num(means[y][j] + 1.3 * rng.normal(), 4))));
    }
    let by_class: Vec<Vec<usize>> = (0..k).map(|c| (0..n).filter(|&i| labels[i] == c).collect()).collect();
    let mut edges = Table::new(["source", "target"]);
    for i in 0..n {
        for _ in 0..(2 + rng.below(5)) {
            let j = if rng.chance(0.8) { *rng.pick(&by_class[labels[i]]) } else { rng.below(n) };
            if j != i {
                edges.push([i.to_string(), j.to_string()]);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let (train_ids, test_ids) = order.split_at(1000);
    let mut train = Table::new(["node_id", "label"]);
    for &i in train_ids {
        train.push([i.to_string(), labels[i].to_string()]);
    }
    let mut test = Table::new(["node_id"]);
    let mut answers = Table::new(["node_id", "label"]);
    for &i in test_ids {
        test.push([i.to_string()]);
        answers.push([i.to_string(), labels[i].to_string()]);
    }
    let oracle = answers.clone();
    let mut g = Generated::new(
        "# ogbn-arxiv (miniature)\n\nPredict the subject area (0–7) of each paper in a citation network.\n\n## Data\n\
         - `node_features.csv`: `node_id` and 16 features per paper (an embedding of its title and abstract).\n- \
         `edges.csv`: `source,target` citation edges (treat them as undirected).\n- `train.csv`: `node_id,label` for \
         the labelled papers.\n- `test.csv`: `node_id` of the papers to classify.\n\n## Evaluation\nClassification \
         accuracy. Write `submission.csv` with columns `node_id,label`."
            .into(),
        answers,
        oracle,
    );
    g.data("node_features.csv", &feats);
    g.data("edges.csv", &edges);
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0");
    g.starter(GRAPH.to_string());
    g
}
