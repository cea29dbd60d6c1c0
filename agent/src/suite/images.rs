//! Image-like tasks: small pixel grids in CSV drawn from class prototypes (cifar-10, aerial-cactus-identification,
//! dogs-vs-cats-redux-kernels-edition, plant-pathology-2020-fgvc7, statoil-iceberg-classifier-challenge,
//! leaf-classification, whale-categorization-playground) and denoising-dirty-documents.
//!
//! Each class has a smooth random prototype; a sample is the prototype shifted by up to a pixel, with random contrast,
//! brightness and pixel noise. Per-image normalisation plus any reasonable classifier over all pixels does far better
//! than the starter's four block means.

use super::common::{Generated, num, pixels, prototype, py_list, sample, starter};
use crate::csvio::Table;
use crate::rng::Rng;

const CENTROID: &str = include_str!("starters/centroid.py");
const DENOISE: &str = include_str!("starters/denoise.py");

/// How the target is written.
enum Target<'a> {
    /// One column holding the class name; scored on the label.
    Label(&'a str),
    /// One column holding P(class 1); classes must be 2.
    Binary(&'a str),
    /// One probability column per class (one-hot answers); train.csv holds the one-hot columns, or the class name in
    /// the given column.
    OneHot(Option<&'a str>),
}

struct Spec<'a> {
    description: &'a str,
    classes: Vec<String>,
    /// Relative class frequencies (uniform when empty).
    weights: Vec<f64>,
    side: usize,
    channels: usize,
    /// Column names of the features (defaults to `p0..`).
    features: Vec<String>,
    noise: f64,
    n_train: usize,
    n_test: usize,
    id: &'a str,
    id_fmt: fn(usize) -> String,
    target: Target<'a>,
    /// Float features with this scale instead of 0–255 pixels.
    float_scale: Option<f64>,
    /// How much of every prototype is a pattern shared by all classes (0 = fully distinct classes).
    shared: f64,
}

fn features_text(spec: &Spec<'_>, v: &[f64]) -> Vec<String> {
    match spec.float_scale {
        Some(s) => v.iter().map(|x| num(s * x, 5)).collect(),
        None => pixels(v),
    }
}

fn generate(rng: &mut Rng, spec: Spec<'_>) -> Generated {
    let k = spec.classes.len();
    let common = prototype(rng, spec.side, spec.channels);
    let protos: Vec<Vec<f64>> = (0..k)
        .map(|_| {
            let own = prototype(rng, spec.side, spec.channels);
            own.iter().zip(&common).map(|(o, c)| spec.shared * c + (1.0 - spec.shared) * o).collect()
        })
        .collect();
    let weights = if spec.weights.is_empty() { vec![1.0; k] } else { spec.weights.clone() };
    let dims = spec.side * spec.side * spec.channels;
    let features: Vec<String> =
        if spec.features.is_empty() { (0..dims).map(|i| format!("p{i}")).collect() } else { spec.features.clone() };
    let (target_cols, positive): (Vec<String>, &str) = match spec.target {
        Target::Label(c) => (vec![c.to_string()], ""),
        Target::Binary(c) => (vec![c.to_string()], "1"),
        Target::OneHot(_) => (spec.classes.clone(), ""),
    };
    let train_targets: Vec<String> = match spec.target {
        Target::OneHot(Some(c)) => vec![c.to_string()],
        _ => target_cols.clone(),
    };
    let mut train = Table::new(std::iter::once(spec.id.to_string()).chain(features.clone()).chain(train_targets.clone()));
    let mut test = Table::new(std::iter::once(spec.id.to_string()).chain(features.clone()));
    let mut answers = Table::new(std::iter::once(spec.id.to_string()).chain(target_cols.clone()));
    for i in 0..spec.n_train + spec.n_test {
        let y = rng.weighted(&weights);
        let x = sample(rng, &protos[y], spec.side, spec.channels, spec.noise, spec.float_scale.is_none());
        let id = (spec.id_fmt)(i);
        let target: Vec<String> = match spec.target {
            Target::Label(_) => vec![spec.classes[y].clone()],
            Target::Binary(_) => vec![y.to_string()],
            Target::OneHot(_) => (0..k).map(|c| if c == y { "1" } else { "0" }.to_string()).collect(),
        };
        let train_target = match spec.target {
            Target::OneHot(Some(_)) => vec![spec.classes[y].clone()],
            _ => target.clone(),
        };
        let feats = features_text(&spec, &x);
        if i < spec.n_train {
            train.push(std::iter::once(id).chain(feats).chain(train_target));
        } else {
            test.push(std::iter::once(id.clone()).chain(feats));
            answers.push(std::iter::once(id).chain(target));
        }
    }
    let oracle = answers.clone();
    let mut g = Generated::new(spec.description.to_string(), answers, oracle);
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    let (output, default) = match spec.target {
        Target::Label(_) => ("label", spec.classes[0].clone()),
        Target::Binary(_) => ("proba", "0.5".into()),
        Target::OneHot(_) => ("columns", num(1.0 / k as f64, 4)),
    };
    g.sample_submission(&default);
    let cols: Vec<&str> = target_cols.iter().map(String::as_str).collect();
    let train_cols: Vec<&str> = train_targets.iter().map(String::as_str).collect();
    g.starter(starter(
        CENTROID,
        &format!(
            "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = {id:?}\nTARGETS = {t}  # label column(s) in train.csv\nOUTPUT = {output:?}  # label | proba | columns | top5\nOUTPUT_COLUMNS = {o}\nPOSITIVE = {positive:?}",
            id = spec.id,
            t = py_list(&train_cols),
            o = py_list(&cols),
        ),
    ));
    g
}

fn seq(i: usize) -> String {
    i.to_string()
}

/// cifar-10: 10 classes of 8×8 RGB images, accuracy.
pub fn cifar10(rng: &mut Rng) -> Generated {
    let classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    generate(rng, Spec {
        description: "# CIFAR-10 (miniature)\n\nClassify small colour images into 10 classes (airplane, automobile, bird, \
                      cat, deer, dog, frog, horse, ship, truck).\n\n## Data\n- `train.csv`: `id`, 192 pixel columns \
                      `p0..p191` (8×8 pixels, channel-major: 64 red, then 64 green, then 64 blue; values 0–255), and \
                      `label`.\n- `test.csv`: the same without `label`.\n- `sample_submission.csv`: the format to \
                      write.\n\n## Evaluation\nClassification accuracy. Write `submission.csv` with columns `id,label`.",
        classes: classes.map(String::from).to_vec(),
        weights: vec![],
        side: 8,
        channels: 3,
        features: vec![],
        noise: 2.2,
        n_train: 1500,
        n_test: 500,
        id: "id",
        id_fmt: |i| (i + 1).to_string(),
        target: Target::Label("label"),
        float_scale: None,
        shared: 0.3,
    })
}

/// aerial-cactus-identification: binary, auc.
pub fn aerial_cactus(rng: &mut Rng) -> Generated {
    generate(rng, Spec {
        description: "# Aerial Cactus Identification (miniature)\n\nDecide whether an aerial photo contains a columnar \
                      cactus.\n\n## Data\n- `train.csv`: `id` (an image file name), 192 pixel columns `p0..p191` (8×8 \
                      RGB, channel-major, 0–255) and `has_cactus` (0/1).\n- `test.csv`: the same without the \
                      target.\n\n## Evaluation\nArea under the ROC curve between the predicted probability and the \
                      observed target. Write `submission.csv` with columns `id,has_cactus` (a probability).",
        classes: vec!["0".into(), "1".into()],
        weights: vec![0.25, 0.75],
        side: 8,
        channels: 3,
        features: vec![],
        noise: 1.1,
        n_train: 1200,
        n_test: 500,
        id: "id",
        id_fmt: |i| format!("{:08x}.jpg", (i as u64).wrapping_mul(2_654_435_761) % 0xffff_ffff),
        target: Target::Binary("has_cactus"),
        float_scale: None,
        shared: 0.75,
    })
}

/// dogs-vs-cats-redux-kernels-edition: binary, logloss.
pub fn dogs_vs_cats(rng: &mut Rng) -> Generated {
    generate(rng, Spec {
        description: "# Dogs vs. Cats Redux (miniature)\n\nPredict whether an image shows a dog (1) or a cat (0).\n\n## \
                      Data\n- `train.csv`: `id`, 64 pixel columns `p0..p63` (8×8 grayscale, 0–255) and `label` \
                      (1 = dog).\n- `test.csv`: the same without `label`.\n\n## Evaluation\nLog loss of the predicted \
                      probability that the image is a dog. Write `submission.csv` with columns `id,label`.",
        classes: vec!["0".into(), "1".into()],
        weights: vec![],
        side: 8,
        channels: 1,
        features: vec![],
        noise: 1.0,
        n_train: 1400,
        n_test: 500,
        id: "id",
        id_fmt: |i| (i + 1).to_string(),
        target: Target::Binary("label"),
        float_scale: None,
        shared: 0.6,
    })
}

/// plant-pathology-2020-fgvc7: 4 one-hot columns, mean column auc.
pub fn plant_pathology(rng: &mut Rng) -> Generated {
    generate(rng, Spec {
        description: "# Plant Pathology 2020 (miniature)\n\nClassify apple-leaf images as healthy, multiple_diseases, \
                      rust or scab.\n\n## Data\n- `train.csv`: `image_id`, 192 pixel columns (8×8 RGB, channel-major, \
                      0–255) and four one-hot columns `healthy,multiple_diseases,rust,scab`.\n- `test.csv`: the same \
                      without targets.\n\n## Evaluation\nMean column-wise ROC AUC over the four columns. Write \
                      `submission.csv` with columns `image_id,healthy,multiple_diseases,rust,scab` (probabilities).",
        classes: ["healthy", "multiple_diseases", "rust", "scab"].map(String::from).to_vec(),
        weights: vec![0.3, 0.1, 0.32, 0.28],
        side: 8,
        channels: 3,
        features: vec![],
        noise: 1.2,
        n_train: 1200,
        n_test: 500,
        id: "image_id",
        id_fmt: |i| format!("Train_{i}"),
        target: Target::OneHot(None),
        float_scale: None,
        shared: 0.4,
    })
}

/// statoil-iceberg-classifier-challenge: two radar bands, binary logloss.
pub fn statoil(rng: &mut Rng) -> Generated {
    let features: Vec<String> =
        (0..2).flat_map(|b| (0..64).map(move |i| format!("band_{}_{i}", b + 1))).collect();
    generate(rng, Spec {
        description: "# Statoil/C-CORE Iceberg Classifier Challenge (miniature)\n\nDecide whether a radar image shows \
                      an iceberg (1) or a ship (0).\n\n## Data\n- `train.csv`: `id`, two 8×8 radar bands \
                      `band_1_0..band_1_63` and `band_2_0..band_2_63` (backscatter in dB) and `is_iceberg`.\n- \
                      `test.csv`: the same without the target.\n\n## Evaluation\nLog loss of the predicted probability \
                      of an iceberg. Write `submission.csv` with columns `id,is_iceberg`.",
        classes: vec!["0".into(), "1".into()],
        weights: vec![0.53, 0.47],
        side: 8,
        channels: 2,
        features,
        noise: 1.0,
        n_train: 1000,
        n_test: 400,
        id: "id",
        id_fmt: |i| format!("{:08x}", (i as u64 + 7).wrapping_mul(0x9e37_79b1) & 0xffff_ffff),
        target: Target::Binary("is_iceberg"),
        float_scale: Some(5.0),
        shared: 0.6,
    })
}

/// leaf-classification: 48 shape features, 10 species, multiclass logloss.
pub fn leaf(rng: &mut Rng) -> Generated {
    let species = [
        "Acer_Palmatum", "Alnus_Rubra", "Betula_Pendula", "Castanea_Sativa", "Fagus_Sylvatica", "Ginkgo_Biloba",
        "Ilex_Aquifolium", "Quercus_Robur", "Salix_Fragilis", "Tilia_Platyphyllos",
    ];
    let features: Vec<String> = ["margin", "shape", "texture"]
        .iter()
        .flat_map(|k| (1..=16).map(move |i| format!("{k}{i}")))
        .collect();
    generate(rng, Spec {
        description: "# Leaf Classification (miniature)\n\nIdentify the species of a leaf from pre-extracted features.\n\n\
                      ## Data\n- `train.csv`: `id`, 48 features `margin1..16`, `shape1..16`, `texture1..16`, and \
                      `species`.\n- `test.csv`: the same without `species`.\n\n## Evaluation\nMulti-class log loss. \
                      Write `submission.csv` with `id` and one probability column per species (see \
                      `sample_submission.csv`).",
        classes: species.map(String::from).to_vec(),
        weights: vec![],
        side: 4,
        channels: 3,
        features,
        noise: 0.9,
        n_train: 800,
        n_test: 400,
        id: "id",
        id_fmt: seq,
        target: Target::OneHot(Some("species")),
        float_scale: Some(0.01),
        shared: 0.3,
    })
}

/// whale-categorization-playground: 25 known whales plus many unique `new_whale`s, map@5.
pub fn whale(rng: &mut Rng) -> Generated {
    let mut classes: Vec<String> = (0..25).map(|i| format!("w_{:07x}", (i as u64 * 0x02f1_b3c5 + 0x1a2b) & 0xfff_ffff)).collect();
    classes.push("new_whale".into());
    let side = 8;
    let protos: Vec<Vec<f64>> = (0..25).map(|_| prototype(rng, side, 1)).collect();
    let features: Vec<String> = (0..side * side).map(|i| format!("p{i}")).collect();
    let mut train = Table::new(std::iter::once("Image".to_string()).chain(features.clone()).chain(["Id".to_string()]));
    let mut test = Table::new(std::iter::once("Image".to_string()).chain(features.clone()));
    let mut answers = Table::new(["Image", "Id"]);
    let (n_train, n_test) = (700, 300);
    for i in 0..n_train + n_test {
        let new = rng.chance(0.3);
        let (label, x) = if new {
            let p = prototype(rng, side, 1);
            ("new_whale".to_string(), sample(rng, &p, side, 1, 0.6, true))
        } else {
            // Skewed popularity: some whales are photographed much more often.
            let w: Vec<f64> = (0..25).map(|j| 1.0 / (1.0 + j as f64 * 0.3)).collect();
            let y = rng.weighted(&w);
            (classes[y].clone(), sample(rng, &protos[y], side, 1, 0.6, true))
        };
        let id = format!("{:08x}.jpg", (i as u64 + 11).wrapping_mul(0x85eb_ca6b) & 0xffff_ffff);
        if i < n_train {
            train.push(std::iter::once(id).chain(pixels(&x)).chain([label]));
        } else {
            test.push(std::iter::once(id.clone()).chain(pixels(&x)));
            answers.push([id, label]);
        }
    }
    let oracle = answers.clone();
    let mut g = Generated::new(
        "# Humpback Whale Identification (miniature)\n\nIdentify individual humpback whales from images of their \
         flukes. Whales not seen in training are labelled `new_whale`.\n\n## Data\n- `train.csv`: `Image`, 64 pixel \
         columns `p0..p63` (8×8 grayscale, 0–255) and `Id` (a whale id or `new_whale`).\n- `test.csv`: the same \
         without `Id`.\n\n## Evaluation\nMean average precision at 5 (MAP@5): for each image predict up to 5 ids, \
         space-separated, most likely first. Write `submission.csv` with columns `Image,Id`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("new_whale w_0001a2b w_2f1d0e0 w_1a2b000 w_0000000");
    g.starter(starter(
        CENTROID,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"Image\"\nTARGETS = [\"Id\"]\nOUTPUT = \"top5\"  # label | proba | columns | top5\nOUTPUT_COLUMNS = [\"Id\"]\nPOSITIVE = \"\"",
    ));
    g
}

/// denoising-dirty-documents: 16×16 text images with stains and noise; predict clean pixels, rmse.
pub fn denoising(rng: &mut Rng) -> Generated {
    let side = 16;
    let (n_train, n_test) = (24, 10);
    let mut noisy_train = Table::new(["image", "row", "col", "value"]);
    let mut clean_train = Table::new(["image", "row", "col", "value"]);
    let mut noisy_test = Table::new(["image", "row", "col", "value"]);
    let mut answers = Table::new(["id", "value"]);
    for img in 0..n_train + n_test {
        // Clean page: white background, dark "text" strokes on a few lines.
        let mut clean = vec![1.0f64; side * side];
        for line in (2..side - 2).step_by(4) {
            let mut x = rng.below(3);
            while x < side - 1 {
                let w = 1 + rng.below(3);
                for dx in 0..w.min(side - x) {
                    for dy in 0..2 {
                        if rng.chance(0.85) {
                            clean[(line + dy) * side + x + dx] = rng.range(0.0, 0.25);
                        }
                    }
                }
                x += w + 1 + rng.below(2);
            }
        }
        // Stain: a smooth darkening blob; plus sensor noise.
        let (cx, cy, r, depth) =
            (rng.range(0.0, 16.0), rng.range(0.0, 16.0), rng.range(3.0, 8.0), rng.range(0.2, 0.5));
        let id = img + 1;
        for y in 0..side {
            for x in 0..side {
                let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                let stain = 1.0 - depth * (-d2 / (2.0 * r * r)).exp();
                let c = clean[y * side + x];
                let n = (c * stain * 0.9 + 0.05 + 0.07 * rng.normal()).clamp(0.0, 1.0);
                let cells = [id.to_string(), (y + 1).to_string(), (x + 1).to_string()];
                if img < n_train {
                    noisy_train.push(cells.iter().cloned().chain([num(n, 4)]));
                    clean_train.push(cells.iter().cloned().chain([num(c, 4)]));
                } else {
                    noisy_test.push(cells.iter().cloned().chain([num(n, 4)]));
                    answers.push([format!("{id}_{}_{}", y + 1, x + 1), num(c, 4)]);
                }
            }
        }
    }
    let oracle = answers.clone();
    let mut g = Generated::new(
        "# Denoising Dirty Documents (miniature)\n\nRemove stains and noise from scanned text: predict the clean \
         intensity of every pixel.\n\n## Data\n- `train_noisy.csv` and `train_cleaned.csv`: `image,row,col,value` \
         (intensity 0 = black … 1 = white) for 24 paired 16×16 images.\n- `test_noisy.csv`: 10 noisy images.\n\n## \
         Evaluation\nRoot mean squared error between predicted and clean intensities. Write `submission.csv` with \
         columns `id,value`, where `id` is `image_row_col` (e.g. `25_1_1`)."
            .into(),
        answers,
        oracle,
    );
    g.data("train_noisy.csv", &noisy_train);
    g.data("train_cleaned.csv", &clean_train);
    g.data("test_noisy.csv", &noisy_test);
    g.sample_submission("1");
    g.starter(DENOISE.to_string());
    g
}
