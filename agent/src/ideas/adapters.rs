//! What the idea generator and the program writer know about each training task: how to read its data into a feature
//! matrix and a target matrix, which feature sets make sense, and how to write its submission.
//!
//! Every task becomes the same shape in the generated Python: `TRAIN_ROWS`/`TEST_ROWS` (csv dicts), `CLASSES` (for
//! classification), `target(row)` (a one-hot or a vector of regression targets), one feature function per feature
//! set, and `write_submission(rows, preds)`. The generic model code in [`super::program`] then works for all of them.

/// Classification (targets are one-hot, predictions probabilities) or regression (targets are numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Predict a class; outputs are class probabilities.
    Classify,
    /// Predict one or more numbers.
    Regress,
}

/// One way of turning a row into features.
#[derive(Debug)]
pub struct FeatureSet {
    /// Short name stored in a plan.
    pub name: &'static str,
    /// Words used in the idea's text.
    pub text: &'static str,
    /// Python: the body of `def features(row):` (4-space indented), may call the adapter's helpers.
    pub body: &'static str,
}

/// A training task as the generator sees it.
#[derive(Debug)]
pub struct Adapter {
    /// Task name.
    pub task: &'static str,
    /// Classification or regression.
    pub kind: Kind,
    /// Python defining `TRAIN_ROWS`, `TEST_ROWS`, `CLASSES` (classification), `target(row)`, helpers for the feature
    /// sets, and `write_submission(rows, preds)`.
    pub prelude: &'static str,
    /// Feature sets; the first is the default.
    pub features: &'static [FeatureSet],
    /// Images stored as `p0..` pixel columns (horizontal-flip augmentation applies).
    pub image: bool,
    /// Gradient-boosted stumps are affordable (few features × outputs).
    pub boosting: bool,
    /// Regression targets are non-negative (a log1p target transform applies).
    pub nonneg_targets: bool,
}

const IMAGE_HELPERS: &str = r#"
def label_of(row):
    if len(LABEL_COLUMNS) == 1:
        return row[LABEL_COLUMNS[0]]
    return max(LABEL_COLUMNS, key=lambda c: float(row[c]))


if len(LABEL_COLUMNS) == 1:
    CLASSES = sorted({label_of(r) for r in TRAIN_ROWS})
else:
    CLASSES = list(LABEL_COLUMNS)


def target(row):
    y = label_of(row)
    return [1.0 if c == y else 0.0 for c in CLASSES]


def pixels(row):
    return [float(row[c]) / 255.0 for c in PIX]


def normalize_image(v):
    # Per-image standardisation removes brightness and contrast differences between samples.
    m = sum(v) / len(v)
    s = math.sqrt(sum((a - m) ** 2 for a in v) / len(v)) or 1.0
    return [(a - m) / s for a in v]


def block_means(v, size):
    out = []
    for c in range(CHANNELS):
        base = c * SIDE * SIDE
        for by in range(0, SIDE, size):
            for bx in range(0, SIDE, size):
                s = 0.0
                for y in range(by, by + size):
                    for x in range(bx, bx + size):
                        s += v[base + y * SIDE + x]
                out.append(s / (size * size))
    return out


def flip_row(row):
    # Mirror the image left-right (data augmentation).
    out = dict(row)
    for c in range(CHANNELS):
        for y in range(SIDE):
            for x in range(SIDE):
                out[PIX[c * SIDE * SIDE + y * SIDE + x]] = row[PIX[c * SIDE * SIDE + y * SIDE + SIDE - 1 - x]]
    return out


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        if OUTPUT == "columns":
            w.writerow([ID] + CLASSES)
        else:
            w.writerow([ID, LABEL_COLUMNS[0]])
        for row, p in zip(rows, preds):
            if OUTPUT == "label":
                w.writerow([row[ID], CLASSES[p.index(max(p))]])
            elif OUTPUT == "proba":
                w.writerow([row[ID], round(p[CLASSES.index(POSITIVE)], 6)])
            else:
                w.writerow([row[ID]] + [round(v, 6) for v in p])
"#;

const IMAGE_FEATURES: &[FeatureSet] = &[
    FeatureSet {
        name: "norm-blocks2",
        text: "per-image standardised 2x2 block means of every channel",
        body: "    return block_means(normalize_image(pixels(row)), 2)",
    },
    FeatureSet { name: "blocks2", text: "raw 2x2 block means of every channel", body: "    return block_means(pixels(row), 2)" },
    FeatureSet {
        name: "blocks4",
        text: "coarse 4x4 block means (four quadrants per channel)",
        body: "    return block_means(pixels(row), 4)",
    },
    FeatureSet {
        name: "profiles",
        text: "row and column intensity profiles of the standardised image",
        body: "    v = normalize_image(pixels(row))\n    out = []\n    for c in range(CHANNELS):\n        base = c * SIDE * SIDE\n        out += [sum(v[base + y * SIDE:base + (y + 1) * SIDE]) / SIDE for y in range(SIDE)]\n        out += [sum(v[base + y * SIDE + x] for y in range(SIDE)) / SIDE for x in range(SIDE)]\n    return out",
    },
    FeatureSet {
        name: "gradients",
        text: "edge features: quadrant means of horizontal and vertical gradient magnitudes plus quadrant intensities",
        body: "    v = normalize_image(pixels(row))\n    gx, gy = [0.0] * len(v), [0.0] * len(v)\n    for c in range(CHANNELS):\n        base = c * SIDE * SIDE\n        for y in range(SIDE):\n            for x in range(SIDE):\n                i = base + y * SIDE + x\n                if x + 1 < SIDE:\n                    gx[i] = abs(v[i + 1] - v[i])\n                if y + 1 < SIDE:\n                    gy[i] = abs(v[i + SIDE] - v[i])\n    return block_means(gx, 4) + block_means(gy, 4) + block_means(v, 4)",
    },
    FeatureSet {
        name: "channel-stats",
        text: "per-channel statistics (mean, standard deviation, minimum, maximum) plus quadrant means",
        body: "    v = pixels(row)\n    out = []\n    for c in range(CHANNELS):\n        ch = v[c * SIDE * SIDE:(c + 1) * SIDE * SIDE]\n        m = sum(ch) / len(ch)\n        out += [m, math.sqrt(sum((a - m) ** 2 for a in ch) / len(ch)), min(ch), max(ch)]\n    return out + block_means(v, 4)",
    },
];

macro_rules! image_prelude {
    ($id:literal, $channels:literal, $labels:literal, $output:literal, $positive:literal) => {
        concat!(
            "TRAIN_ROWS = read(\"train.csv\")\nTEST_ROWS = read(\"test.csv\")\nID = \"",
            $id,
            "\"\nCHANNELS = ",
            $channels,
            "\nSIDE = 8\nPIX = [\"p%d\" % i for i in range(CHANNELS * SIDE * SIDE)]\nLABEL_COLUMNS = ",
            $labels,
            "\nOUTPUT = \"",
            $output,
            "\"  # label | proba | columns\nPOSITIVE = \"",
            $positive,
            "\"\n"
        )
    };
}

const TABULAR_HELPERS: &str = r#"
def number(value):
    try:
        return float(value)
    except ValueError:
        return 0.0


LEVELS = {c: sorted({r[c] for r in TRAIN_ROWS}) for c in CATEGORICAL}


def numeric(row):
    return [number(row[c]) for c in NUMERIC]


def one_hot(row):
    out = []
    for c in CATEGORICAL:
        out += [1.0 if row[c] == v else 0.0 for v in LEVELS[c]]
    return out


def log_numeric(row):
    return [math.log1p(max(number(row[c]), 0.0)) for c in NUMERIC]


def squares_and_products(v, top):
    head = v[:top]
    out = [a * a for a in head]
    for i in range(len(head)):
        for j in range(i + 1, len(head)):
            out.append(head[i] * head[j])
    return out
"#;

static HOME_FEATURES: [FeatureSet; 5] = [
    FeatureSet {
        name: "numeric-onehot",
        text: "all numeric columns plus one-hot encoded categorical columns",
        body: "    return numeric(row) + one_hot(row)",
    },
    FeatureSet { name: "numeric", text: "the numeric columns only", body: "    return numeric(row)" },
    FeatureSet {
        name: "log-onehot",
        text: "log1p-transformed numeric columns plus one-hot categoricals",
        body: "    return log_numeric(row) + one_hot(row)",
    },
    FeatureSet {
        name: "derived",
        text: "engineered house features (total square footage, house age, quality times living area) with numeric and one-hot columns",
        body: "    return numeric(row) + one_hot(row) + derived(row)",
    },
    FeatureSet {
        name: "quadratic",
        text: "numeric columns with their squares and pairwise products (degree-2 polynomial) plus one-hot categoricals",
        body: "    v = numeric(row)\n    return v + squares_and_products(v, 5) + one_hot(row)",
    },
];

const HOME_PRELUDE: &str = r#"TRAIN_ROWS = read("train.csv")
TEST_ROWS = read("test.csv")
ID = "Id"
TARGETS = ["SalePrice"]
NUMERIC = ["OverallQual", "GrLivArea", "TotalBsmtSF", "GarageCars", "YearBuilt", "FullBath", "LotArea"]
CATEGORICAL = ["Neighborhood"]


def target(row):
    return [float(row[t]) for t in TARGETS]


def derived(row):
    total = number(row["GrLivArea"]) + number(row["TotalBsmtSF"])
    age = 2010.0 - number(row["YearBuilt"])
    return [total, age, number(row["OverallQual"]) * number(row["GrLivArea"])]


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ID] + TARGETS)
        for row, p in zip(rows, preds):
            w.writerow([row[ID]] + [round(v) for v in p])
"#;

const SPACESHIP_PRELUDE: &str = r#"TRAIN_ROWS = read("train.csv")
TEST_ROWS = read("test.csv")
ID = "PassengerId"
NUMERIC = ["Age", "RoomService", "FoodCourt", "ShoppingMall", "Spa", "VRDeck"]
CATEGORICAL = ["HomePlanet", "CryoSleep", "Destination", "VIP"]
CLASSES = ["False", "True"]


def target(row):
    return [1.0 if row["Transported"] == c else 0.0 for c in CLASSES]


def derived(row):
    spend = sum(number(row[c]) for c in NUMERIC[1:])
    deck, _, side = (row["Cabin"].split("/") + ["", "", ""])[:3]
    decks = "ABCDEFGT"
    flags = [math.log1p(spend), 1.0 if spend == 0 else 0.0, 1.0 if side == "S" else 0.0]
    return flags + [1.0 if deck == d else 0.0 for d in decks]


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ID, "Transported"])
        for row, p in zip(rows, preds):
            w.writerow([row[ID], CLASSES[p.index(max(p))]])
"#;

static SPACESHIP_FEATURES: [FeatureSet; 5] = [
    FeatureSet {
        name: "numeric-onehot",
        text: "all numeric columns plus one-hot encoded categorical columns",
        body: "    return numeric(row) + one_hot(row)",
    },
    FeatureSet { name: "numeric", text: "the numeric columns only", body: "    return numeric(row)" },
    FeatureSet {
        name: "log-onehot",
        text: "log1p-transformed numeric columns plus one-hot categoricals",
        body: "    return log_numeric(row) + one_hot(row)",
    },
    FeatureSet {
        name: "derived",
        text: "engineered passenger features (total spending, zero-spend flag, cabin deck and side parsed from Cabin) with numeric and one-hot columns",
        body: "    return numeric(row) + one_hot(row) + derived(row)",
    },
    FeatureSet {
        name: "quadratic",
        text: "numeric columns with their squares and pairwise products (degree-2 polynomial) plus one-hot categoricals",
        body: "    v = numeric(row)\n    return v + squares_and_products(v, 5) + one_hot(row)",
    },
];

const NOMAD_PRELUDE: &str = r#"TRAIN_ROWS = read("train.csv")
TEST_ROWS = read("test.csv")
ID = "id"
TARGETS = ["formation_energy_ev_natom", "bandgap_energy_ev"]
NUMERIC = ["percent_atom_al", "percent_atom_ga", "percent_atom_in", "number_of_total_atoms", "lattice_vector_1_ang",
           "lattice_vector_2_ang", "lattice_vector_3_ang", "lattice_angle_alpha_degree", "lattice_angle_beta_degree",
           "lattice_angle_gamma_degree"]
CATEGORICAL = ["spacegroup"]


def target(row):
    return [float(row[t]) for t in TARGETS]


def derived(row):
    a, b, c = (number(row["lattice_vector_%d_ang" % i]) for i in (1, 2, 3))
    volume = a * b * c
    atoms = max(number(row["number_of_total_atoms"]), 1.0)
    al, ga, inn = (number(row[k]) for k in ("percent_atom_al", "percent_atom_ga", "percent_atom_in"))
    return [volume, volume / atoms, al * ga, al * inn, ga * inn]


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ID] + TARGETS)
        for row, p in zip(rows, preds):
            w.writerow([row[ID]] + [round(max(v, 0.0), 5) for v in p])
"#;

static NOMAD_FEATURES: [FeatureSet; 5] = [
    FeatureSet {
        name: "numeric-onehot",
        text: "all numeric columns plus one-hot encoded spacegroup",
        body: "    return numeric(row) + one_hot(row)",
    },
    FeatureSet { name: "numeric", text: "the numeric columns only", body: "    return numeric(row)" },
    FeatureSet {
        name: "log-onehot",
        text: "log1p-transformed numeric columns plus one-hot spacegroup",
        body: "    return log_numeric(row) + one_hot(row)",
    },
    FeatureSet {
        name: "derived",
        text: "engineered crystal features (cell volume, volume per atom, pairwise composition products) with numeric and one-hot columns",
        body: "    return numeric(row) + one_hot(row) + derived(row)",
    },
    FeatureSet {
        name: "quadratic",
        text: "composition columns with their squares and pairwise products (degree-2 polynomial) plus one-hot spacegroup",
        body: "    v = numeric(row)\n    return v + squares_and_products(v, 5) + one_hot(row)",
    },
];

const FEEDBACK_PRELUDE: &str = r#"TRAIN_ROWS = read("train.csv")
TEST_ROWS = read("test.csv")
ID = "text_id"
TARGETS = ["cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions"]


def target(row):
    return [float(row[t]) for t in TARGETS]


def words(text):
    return [w.strip(".,;:!?").lower() for w in text.split() if w.strip(".,;:!?")]


def sentences(text):
    return [s for s in text.replace("!", ".").replace("?", ".").split(".") if s.strip()]


def counts(text):
    ws = words(text)
    n = max(len(ws), 1)
    ss = sentences(text)
    return [math.log1p(len(text)), math.log1p(len(ws)), float(len(ss)), n / max(len(ss), 1),
            sum(len(w) for w in ws) / n]


def lexical(text):
    ws = words(text)
    n = max(len(ws), 1)
    return [len(set(ws)) / n, sum(1 for w in ws if len(w) >= 8) / n, sum(1 for w in ws if len(w) <= 3) / n]


VOCAB = {}
for r in TRAIN_ROWS:
    for w in words(r["full_text"]):
        VOCAB[w] = VOCAB.get(w, 0) + 1
TOP_WORDS = sorted(VOCAB, key=lambda w: (-VOCAB[w], w))


def errors(text):
    # Rare words (seen fewer than 3 times in training) are mostly misspellings; unterminated sentences are errors too.
    ws = words(text)
    n = max(len(ws), 1)
    parts = [p for p in text.split(".")]
    unterminated = sum(1 for p in parts[:-1] if len(p.split()) > 20) + (1 if parts[-1].strip() else 0)
    return [sum(1 for w in ws if VOCAB.get(w, 0) < 3) / n, unterminated / max(len(sentences(text)), 1)]


def bag_of_words(text, top):
    ws = words(text)
    n = max(len(ws), 1)
    index = {w: i for i, w in enumerate(TOP_WORDS[:top])}
    out = [0.0] * len(index)
    for w in ws:
        if w in index:
            out[index[w]] += 1.0 / n
    return out


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ID] + TARGETS)
        for row, p in zip(rows, preds):
            w.writerow([row[ID]] + [round(min(max(v, 1.0), 5.0), 3) for v in p])
"#;

static FEEDBACK_FEATURES: [FeatureSet; 5] = [
    FeatureSet {
        name: "counts-lexical-errors",
        text: "essay length counts, lexical richness (type-token ratio, long-word share) and error rates (rare-word share, unterminated sentences)",
        body: "    t = row[\"full_text\"]\n    return counts(t) + lexical(t) + errors(t)",
    },
    FeatureSet {
        name: "counts",
        text: "essay length statistics (characters, words, sentences, words per sentence, word length)",
        body: "    return counts(row[\"full_text\"])",
    },
    FeatureSet {
        name: "counts-lexical",
        text: "essay length statistics plus lexical richness (type-token ratio, long and short word shares)",
        body: "    t = row[\"full_text\"]\n    return counts(t) + lexical(t)",
    },
    FeatureSet {
        name: "bow30",
        text: "relative frequencies of the 30 most common words (bag of words) plus length statistics",
        body: "    t = row[\"full_text\"]\n    return counts(t) + bag_of_words(t, 30)",
    },
    FeatureSet {
        name: "bow60-errors",
        text: "a 60-word bag of words with error-rate features",
        body: "    t = row[\"full_text\"]\n    return errors(t) + bag_of_words(t, 60)",
    },
];

const GRAPH_PRELUDE: &str = r#"FEATURES = {r["node_id"]: [float(v) for k, v in r.items() if k != "node_id"] for r in read("node_features.csv")}
TRAIN_ROWS = read("train.csv")
TEST_ROWS = read("test.csv")
ID = "node_id"
CLASSES = sorted({r["label"] for r in TRAIN_ROWS}, key=int)
KNOWN = {r["node_id"]: r["label"] for r in TRAIN_ROWS}
NEIGHBOURS = {}
for e in read("edges.csv"):
    NEIGHBOURS.setdefault(e["source"], []).append(e["target"])
    NEIGHBOURS.setdefault(e["target"], []).append(e["source"])


def target(row):
    return [1.0 if row["label"] == c else 0.0 for c in CLASSES]


def neighbour_labels(node, exclude_self):
    # Label histogram of the node's labelled neighbours (its own label is never used for itself).
    out = [0.0] * len(CLASSES)
    for m in NEIGHBOURS.get(node, []):
        if m in KNOWN and not (exclude_self and m == node):
            out[CLASSES.index(KNOWN[m])] += 1.0
    total = sum(out)
    return [v / total for v in out] if total else out


def neighbour_mean(node):
    ns = NEIGHBOURS.get(node, [])
    x = FEATURES[node]
    if not ns:
        return list(x)
    return [sum(FEATURES[m][j] for m in ns) / len(ns) for j in range(len(x))]


def write_submission(rows, preds):
    with open("submission.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ID, "label"])
        for row, p in zip(rows, preds):
            w.writerow([row[ID], CLASSES[p.index(max(p))]])
"#;

static GRAPH_FEATURES: [FeatureSet; 5] = [
    FeatureSet {
        name: "feat-neighbour-labels",
        text: "node features plus the label histogram of labelled citation neighbours",
        body: "    n = row[\"node_id\"]\n    return FEATURES[n] + neighbour_labels(n, True)",
    },
    FeatureSet { name: "feat", text: "the node features only (graph ignored)", body: "    return FEATURES[row[\"node_id\"]]" },
    FeatureSet {
        name: "feat-neighbour-mean",
        text: "node features concatenated with the mean features of citation neighbours (one round of message passing)",
        body: "    n = row[\"node_id\"]\n    return FEATURES[n] + neighbour_mean(n)",
    },
    FeatureSet {
        name: "neighbour-labels",
        text: "only the label histogram of labelled citation neighbours",
        body: "    return neighbour_labels(row[\"node_id\"], True)",
    },
    FeatureSet {
        name: "feat-mean-labels",
        text: "node features, neighbour-mean features and the neighbour label histogram together",
        body: "    n = row[\"node_id\"]\n    return FEATURES[n] + neighbour_mean(n) + neighbour_labels(n, True)",
    },
];

static HOME: Adapter = Adapter {
    task: "home-data-for-ml-course",
    kind: Kind::Regress,
    prelude: HOME_PRELUDE,
    features: &HOME_FEATURES,
    image: false,
    boosting: true,
    nonneg_targets: true,
};

static SPACESHIP: Adapter = Adapter {
    task: "spaceship-titanic",
    kind: Kind::Classify,
    prelude: SPACESHIP_PRELUDE,
    features: &SPACESHIP_FEATURES,
    image: false,
    boosting: true,
    nonneg_targets: false,
};

static NOMAD: Adapter = Adapter {
    task: "nomad2018-predict-transparent-conductors",
    kind: Kind::Regress,
    prelude: NOMAD_PRELUDE,
    features: &NOMAD_FEATURES,
    image: false,
    boosting: true,
    nonneg_targets: true,
};

static FEEDBACK: Adapter = Adapter {
    task: "feedback-prize-english-language-learning",
    kind: Kind::Regress,
    prelude: FEEDBACK_PRELUDE,
    features: &FEEDBACK_FEATURES,
    image: false,
    boosting: true,
    nonneg_targets: true,
};

static GRAPH: Adapter = Adapter {
    task: "ogbn-arxiv",
    kind: Kind::Classify,
    prelude: GRAPH_PRELUDE,
    features: &GRAPH_FEATURES,
    image: false,
    boosting: false,
    nonneg_targets: false,
};

static CIFAR: Adapter = Adapter {
    task: "cifar-10",
    kind: Kind::Classify,
    prelude: image_prelude!("id", "3", "[\"label\"]", "label", ""),
    features: IMAGE_FEATURES,
    image: true,
    boosting: false,
    nonneg_targets: false,
};

static CACTUS: Adapter = Adapter {
    task: "aerial-cactus-identification",
    kind: Kind::Classify,
    prelude: image_prelude!("id", "3", "[\"has_cactus\"]", "proba", "1"),
    features: IMAGE_FEATURES,
    image: true,
    boosting: false,
    nonneg_targets: false,
};

static DOGS: Adapter = Adapter {
    task: "dogs-vs-cats-redux-kernels-edition",
    kind: Kind::Classify,
    prelude: image_prelude!("id", "1", "[\"label\"]", "proba", "1"),
    features: IMAGE_FEATURES,
    image: true,
    boosting: false,
    nonneg_targets: false,
};

static PLANT: Adapter = Adapter {
    task: "plant-pathology-2020-fgvc7",
    kind: Kind::Classify,
    prelude: image_prelude!("image_id", "3", "[\"healthy\", \"multiple_diseases\", \"rust\", \"scab\"]", "columns", ""),
    features: IMAGE_FEATURES,
    image: true,
    boosting: false,
    nonneg_targets: false,
};

/// Every task with an offline idea generator (the nine training tasks of the suite).
pub static ADAPTERS: [&Adapter; 9] = [&CIFAR, &CACTUS, &DOGS, &PLANT, &HOME, &SPACESHIP, &NOMAD, &FEEDBACK, &GRAPH];

/// The adapter of a task.
pub fn adapter(task: &str) -> Option<&'static Adapter> {
    ADAPTERS.iter().copied().find(|a| a.task == task)
}

impl Adapter {
    /// Python helpers shared by all feature sets of this task (after the prelude).
    pub fn helpers(&self) -> &'static str {
        if self.image {
            IMAGE_HELPERS
        } else if self.prelude.contains("CATEGORICAL") {
            TABULAR_HELPERS
        } else {
            ""
        }
    }

    /// A feature set by name.
    pub fn feature_set(&self, name: &str) -> Option<&'static FeatureSet> {
        self.features.iter().find(|f| f.name == name)
    }
}
