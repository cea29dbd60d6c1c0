//! Turn a [`Plan`] into a complete, standard-library Python `train.py` for its task.
//!
//! The program is assembled from the task's adapter (data reading, targets, feature helpers, submission writer) and
//! only the model, scaling, data-handling, validation, ensembling and post-processing pieces the plan uses, so every
//! idea of the offline pool is a real, runnable change to the starter. Pure Python keeps it dependency-free; the
//! pieces use `sum(map(mul, …))` dot products and column-wise Gram matrices to stay within a few seconds per run.

use super::adapters::{Adapter, Kind};
use super::{DataStep, Ensemble, IdeaError, Model, Plan, Post, Scaling, Validation};

const HEADER: &str = r#"import bisect
import csv
import heapq
import math
import random
from operator import mul

random.seed(0)


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


"#;

const COMMON: &str = r#"

def softmax(s):
    top = max(s)
    e = [math.exp(v - top) for v in s]
    total = sum(e)
    return [v / total for v in e]


def to_proba(v, eps=EPS):
    # Scores of any model -> probabilities bounded away from 0 (log loss punishes certainty hard).
    v = [max(a, eps) for a in v]
    total = sum(v)
    return [a / total for a in v]


def finish(p):
    return to_proba(p) if CLASSIFY else p
"#;

const STANDARD: &str = r#"

def fit_scaler(X):
    # Standardise each feature with the training mean and standard deviation.
    n = len(X)
    mean = [sum(c) / n for c in zip(*X)]
    std = [math.sqrt(sum((v - m) ** 2 for v in c) / n) or 1.0 for c, m in zip(zip(*X), mean)]
    return lambda x: [(v - m) / s for v, m, s in zip(x, mean, std)]
"#;

const MINMAX: &str = r#"

def fit_scaler(X):
    # Rescale each feature to [0, 1] with the training minimum and maximum.
    lo = [min(c) for c in zip(*X)]
    hi = [max(c) for c in zip(*X)]
    return lambda x: [(v - a) / ((b - a) or 1.0) for v, a, b in zip(x, lo, hi)]
"#;

const CENTROID: &str = r#"

def fit_centroid(X, Y, cosine):
    k, d = len(Y[0]), len(X[0])
    sums, counts = [[0.0] * d for _ in range(k)], [0] * k
    for x, y in zip(X, Y):
        c = y.index(max(y))
        counts[c] += 1
        sums[c] = [a + b for a, b in zip(sums[c], x)]

    def unit(v):
        n = math.sqrt(sum(a * a for a in v)) or 1.0
        return [a / n for a in v]

    cents = [[v / max(counts[c], 1) for v in sums[c]] for c in range(k)]
    if cosine:
        cents = [unit(c) for c in cents]
        return lambda x: softmax([10.0 * sum(map(mul, unit(x), c)) for c in cents])
    sample = list(zip(X, Y))[:300]
    spread = sum(sum((a - b) ** 2 for a, b in zip(x, cents[y.index(max(y))])) for x, y in sample) / len(sample)
    spread = max(spread, 1e-9)
    return lambda x: softmax([-sum((a - b) ** 2 for a, b in zip(x, c)) / spread for c in cents])
"#;

const KNN: &str = r#"

def fit_knn(X, Y, k, weighted):
    norms = [sum(map(mul, t, t)) for t in X]

    def predict(x):
        xx = sum(map(mul, x, x))
        dist = [xx + n - 2.0 * sum(map(mul, x, t)) for t, n in zip(X, norms)]
        out, total = [0.0] * len(Y[0]), 0.0
        for i in heapq.nsmallest(k, range(len(dist)), key=dist.__getitem__):
            w = 1.0 / (math.sqrt(max(dist[i], 0.0)) + 1e-6) if weighted else 1.0
            total += w
            out = [a + w * b for a, b in zip(out, Y[i])]
        return [v / total for v in out]

    return predict
"#;

const RIDGE: &str = r#"

def solve(A, B):
    # Gauss-Jordan elimination with partial pivoting: returns A^-1 B.
    d = len(A)
    M = [A[i][:] + B[i][:] for i in range(d)]
    for c in range(d):
        p = max(range(c, d), key=lambda r: abs(M[r][c]))
        M[c], M[p] = M[p], M[c]
        pivot = M[c][c] if abs(M[c][c]) > 1e-12 else 1e-12
        M[c] = [v / pivot for v in M[c]]
        for r in range(d):
            f = M[r][c]
            if r != c and f != 0.0:
                M[r] = [a - f * b for a, b in zip(M[r], M[c])]
    return [row[d:] for row in M]


def fit_ridge(X, Y, lam):
    # Closed-form ridge regression on centred data; the penalty is lam * n so it does not depend on the data size.
    n, d, k = len(X), len(X[0]), len(Y[0])
    mx = [sum(c) / n for c in zip(*X)]
    my = [sum(c) / n for c in zip(*Y)]
    cols = [[v - m for v in c] for c, m in zip(zip(*X), mx)]
    ycols = [[v - m for v in c] for c, m in zip(zip(*Y), my)]
    A = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(i, d):
            A[i][j] = A[j][i] = sum(map(mul, cols[i], cols[j]))
        A[i][i] += lam * n
    B = [[sum(map(mul, cols[i], ycols[t])) for t in range(k)] for i in range(d)]
    W = solve(A, B)
    Wt = [[W[i][t] for i in range(d)] for t in range(k)]

    def predict(x):
        z = [a - m for a, m in zip(x, mx)]
        return [my[t] + sum(map(mul, z, Wt[t])) for t in range(k)]

    return predict
"#;

const TARGET_SCALE: &str = r#"

def target_scaler(Y):
    # Gradient-trained regressors learn standardised targets; predictions are mapped back.
    n = len(Y)
    mean = [sum(c) / n for c in zip(*Y)]
    std = [math.sqrt(sum((v - m) ** 2 for v in c) / n) or 1.0 for c, m in zip(zip(*Y), mean)]
    return [[(v - m) / s for v, m, s in zip(y, mean, std)] for y in Y], lambda p: [v * s + m for v, m, s in zip(p, mean, std)]
"#;

const LINEAR: &str = r#"

def fit_linear(X, Y, lr, epochs, l2):
    # Softmax regression (classification) or least squares (regression) by SGD with a 1/(1+epoch) decay.
    if not CLASSIFY:
        Y, back = target_scaler(Y)
    d, k = len(X[0]), len(Y[0])
    W, b = [[0.0] * d for _ in range(k)], [0.0] * k
    order = list(range(len(X)))
    rng = random.Random(0)
    for epoch in range(epochs):
        rng.shuffle(order)
        rate = lr / (1.0 + epoch)
        for i in order:
            x, y = X[i], Y[i]
            s = [sum(map(mul, w, x)) + c for w, c in zip(W, b)]
            p = softmax(s) if CLASSIFY else s
            for t in range(k):
                g = p[t] - y[t]
                W[t] = [w - rate * (g * xi + l2 * w) for w, xi in zip(W[t], x)]
                b[t] -= rate * g

    def predict(x):
        s = [sum(map(mul, w, x)) + c for w, c in zip(W, b)]
        return softmax(s) if CLASSIFY else back(s)

    return predict
"#;

const NAIVE_BAYES: &str = r#"

def fit_naive_bayes(X, Y, smoothing):
    # Gaussian naive Bayes; smoothing adds a share of the largest feature variance to every variance.
    k = len(Y[0])
    groups = [[] for _ in range(k)]
    for x, y in zip(X, Y):
        groups[y.index(max(y))].append(x)
    n = len(X)
    floor = smoothing * max(sum((v - sum(c) / n) ** 2 for v in c) / n for c in zip(*X)) + 1e-9
    stats = []
    for g in groups:
        if not g:
            stats.append(None)
            continue
        m = [sum(c) / len(g) for c in zip(*g)]
        var = [sum((a - mm) ** 2 for a in c) / len(g) + floor for c, mm in zip(zip(*g), m)]
        stats.append((math.log(len(g) / n), m, var))

    def predict(x):
        s = []
        for st in stats:
            if st is None:
                s.append(-1e30)
                continue
            prior, m, var = st
            s.append(prior - 0.5 * sum(math.log(v) + (a - mm) ** 2 / v for a, mm, v in zip(x, m, var)))
        return softmax(s)

    return predict
"#;

const BOOSTING: &str = r#"

def fit_boosting(X, Y, rounds, lr):
    # Gradient boosting of decision stumps (squared loss, one stump per output per round) on 8 quantile cuts.
    n, d, k = len(X), len(X[0]), len(Y[0])
    base = [sum(c) / n for c in zip(*Y)]
    cols = list(zip(*X))
    cuts = []
    for j in range(d):
        s = sorted(cols[j])
        cuts.append(sorted({s[n * q // 8] for q in range(1, 8)}))
    bins = [[bisect.bisect_right(cuts[j], v) for v in cols[j]] for j in range(d)]
    F = [list(base) for _ in range(n)]
    stumps = []
    for _ in range(rounds):
        for t in range(k):
            res = [Y[i][t] - F[i][t] for i in range(n)]
            total = sum(res)
            best = (0.0, 0, 0, 0.0, 0.0)
            for j in range(d):
                nb = len(cuts[j]) + 1
                s, c = [0.0] * nb, [0] * nb
                for b, v in zip(bins[j], res):
                    s[b] += v
                    c[b] += 1
                ls, lc = 0.0, 0
                for b in range(nb - 1):
                    ls += s[b]
                    lc += c[b]
                    rc = n - lc
                    if lc and rc:
                        gain = ls * ls / lc + (total - ls) ** 2 / rc
                        if gain > best[0]:
                            best = (gain, j, b, ls / lc, (total - ls) / rc)
            gain, j, b, lv, rv = best
            if gain <= 0.0:
                continue
            stumps.append((t, j, cuts[j][b], lr * lv, lr * rv))
            for i in range(n):
                F[i][t] += lr * (lv if bins[j][i] <= b else rv)

    def predict(x):
        out = list(base)
        for t, j, cut, lv, rv in stumps:
            out[t] += lv if x[j] < cut else rv
        return out

    return predict
"#;

const MLP: &str = r#"

def fit_mlp(X, Y, hidden, epochs, lr):
    # One hidden tanh layer, softmax (classification) or linear (regression) output, plain SGD.
    if not CLASSIFY:
        Y, back = target_scaler(Y)
    d, k = len(X[0]), len(Y[0])
    rng = random.Random(0)
    W1 = [[rng.gauss(0.0, 1.0 / math.sqrt(d)) for _ in range(d)] for _ in range(hidden)]
    b1 = [0.0] * hidden
    W2 = [[rng.gauss(0.0, 1.0 / math.sqrt(hidden)) for _ in range(hidden)] for _ in range(k)]
    b2 = [0.0] * k

    def forward(x):
        h = [math.tanh(sum(map(mul, w, x)) + c) for w, c in zip(W1, b1)]
        s = [sum(map(mul, w, h)) + c for w, c in zip(W2, b2)]
        return h, (softmax(s) if CLASSIFY else s)

    order = list(range(len(X)))
    for epoch in range(epochs):
        rng.shuffle(order)
        rate = lr / (1.0 + 0.5 * epoch)
        for i in order:
            x, y = X[i], Y[i]
            h, p = forward(x)
            g = [a - b for a, b in zip(p, y)]
            gh = [sum(g[t] * W2[t][j] for t in range(k)) * (1.0 - h[j] * h[j]) for j in range(hidden)]
            for t in range(k):
                W2[t] = [w - rate * g[t] * hj for w, hj in zip(W2[t], h)]
                b2[t] -= rate * g[t]
            for j in range(hidden):
                W1[j] = [w - rate * gh[j] * xi for w, xi in zip(W1[j], x)]
                b1[j] -= rate * gh[j]

    def predict(x):
        p = forward(x)[1]
        return p if CLASSIFY else back(p)

    return predict
"#;

const VALIDATE: &str = r#"

def score(P, Y):
    # Accuracy for classification, RMSE averaged over targets for regression.
    if CLASSIFY:
        return sum(1 for p, y in zip(P, Y) if p.index(max(p)) == y.index(max(y))) / len(Y)
    k = len(Y[0])
    return sum(math.sqrt(sum((p[t] - y[t]) ** 2 for p, y in zip(P, Y)) / len(Y)) for t in range(k)) / k
"#;

fn num(x: f64) -> String {
    let s = format!("{x}");
    if s.contains('.') || s.contains('e') { s } else { format!("{s}.0") }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// The Python call fitting `model` on `X, Y`.
fn fit_call(model: &Model) -> String {
    match model {
        Model::Centroid { cosine } => format!("fit_centroid(X, Y, {})", py_bool(*cosine)),
        Model::Knn { k, weighted } => format!("fit_knn(X, Y, {k}, {})", py_bool(*weighted)),
        Model::Ridge { lambda } => format!("fit_ridge(X, Y, {})", num(*lambda)),
        Model::Linear { lr, epochs, l2 } => format!("fit_linear(X, Y, {}, {epochs}, {})", num(*lr), num(*l2)),
        Model::NaiveBayes { smoothing } => format!("fit_naive_bayes(X, Y, {})", num(*smoothing)),
        Model::Boosting { rounds, lr } => format!("fit_boosting(X, Y, {rounds}, {})", num(*lr)),
        Model::Mlp { hidden, epochs, lr } => format!("fit_mlp(X, Y, {hidden}, {epochs}, {})", num(*lr)),
    }
}

fn model_source(model: &Model) -> &'static str {
    match model {
        Model::Centroid { .. } => CENTROID,
        Model::Knn { .. } => KNN,
        Model::Ridge { .. } => RIDGE,
        Model::Linear { .. } => LINEAR,
        Model::NaiveBayes { .. } => NAIVE_BAYES,
        Model::Boosting { .. } => BOOSTING,
        Model::Mlp { .. } => MLP,
    }
}

/// Wrap long text as a Python docstring paragraph.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out.push_str(&line);
    out
}

/// The complete `train.py` implementing `plan` on the task of `adapter`, with `summary` in its docstring.
pub fn program(adapter: &Adapter, plan: &Plan, summary: &str) -> Result<String, IdeaError> {
    let fs = adapter.feature_set(&plan.features).ok_or_else(|| IdeaError::Plan {
        task: adapter.task.into(),
        message: format!("unknown feature set `{}`", plan.features),
    })?;
    let classify = adapter.kind == Kind::Classify;
    let mut out = format!(
        "\"\"\"{}\n\nStandard library only; writes submission.csv.\n\"\"\"\n",
        wrap(&summary.replace('\\', "/").replace("\"\"\"", "'''"), 100)
    );
    out.push_str(HEADER);
    out.push_str(adapter.prelude);
    out.push_str(adapter.helpers());
    out.push_str(&format!("\n\ndef features(row):\n{}\n", fs.body));
    let eps = match plan.post {
        Post::ClipProba { eps } => eps,
        _ => 1e-3,
    };
    out.push_str(&format!("\n\nCLASSIFY = {}\nEPS = {}\n", py_bool(classify), num(eps)));
    out.push_str(COMMON);
    match plan.scaling {
        Scaling::None => {}
        Scaling::Standard => out.push_str(STANDARD),
        Scaling::MinMax => out.push_str(MINMAX),
    }
    let mut models = vec![&plan.model];
    if let Ensemble::Blend { with } = &plan.ensemble {
        models.push(with);
    }
    let mut seen: Vec<&'static str> = Vec::new();
    let needs_target_scale = !classify && models.iter().any(|m| matches!(m, Model::Linear { .. } | Model::Mlp { .. }));
    if needs_target_scale {
        out.push_str(TARGET_SCALE);
    }
    for m in &models {
        let src = model_source(m);
        if !seen.contains(&src) {
            seen.push(src);
            out.push_str(src);
        }
    }
    if let Validation::KFoldRidge { .. } = plan.validation
        && !seen.contains(&RIDGE)
    {
        out.push_str(RIDGE);
    }
    if plan.validation != Validation::None {
        out.push_str(VALIDATE);
    }

    // Data.
    out.push_str("\n\ntrain_rows = list(TRAIN_ROWS)\n");
    if plan.data == DataStep::FlipAugment {
        out.push_str("train_rows += [flip_row(r) for r in TRAIN_ROWS]  # mirrored copies double the training set\n");
    }
    out.push_str("X = [features(r) for r in train_rows]\nY = [target(r) for r in train_rows]\nT = [features(r) for r in TEST_ROWS]\n");
    match plan.data {
        DataStep::None | DataStep::FlipAugment => {}
        DataStep::Balance => out.push_str(
            "# Oversample every class up to the size of the largest one.\nby_class = {}\nfor x, y in zip(X, Y):\n    \
             by_class.setdefault(y.index(max(y)), []).append((x, y))\nlargest = max(len(v) for v in by_class.values())\n\
             rng = random.Random(1)\nfor c in sorted(by_class):\n    extra = [rng.choice(by_class[c]) for _ in range(largest - len(by_class[c]))]\n    \
             X += [x for x, _ in extra]\n    Y += [y for _, y in extra]\n",
        ),
        DataStep::DropOutliers { z } => out.push_str(&format!(
            "# Drop training rows whose target is more than {z} standard deviations from its mean.\nk = len(Y[0])\n\
             mu = [sum(c) / len(Y) for c in zip(*Y)]\nsd = [math.sqrt(sum((v - m) ** 2 for v in c) / len(Y)) or 1.0 for c, m in zip(zip(*Y), mu)]\n\
             keep = [i for i, y in enumerate(Y) if all(abs(y[t] - mu[t]) <= {z} * sd[t] for t in range(k))]\n\
             print(\"dropped\", len(Y) - len(keep), \"outlier rows\")\nX = [X[i] for i in keep]\nY = [Y[i] for i in keep]\n",
            z = num(z)
        )),
        DataStep::LogTarget => out.push_str("# Learn log1p of the targets; predictions are mapped back with expm1.\nY = [[math.log1p(max(v, 0.0)) for v in y] for y in Y]\n"),
        DataStep::Winsorize { q } => out.push_str(&format!(
            "# Clip every feature to its training [{q}, {hi}] quantiles to tame outliers.\nlo, hi = [], []\nfor c in zip(*X):\n    s = sorted(c)\n    \
             lo.append(s[int({q} * (len(s) - 1))])\n    hi.append(s[int({hi} * (len(s) - 1))])\n\n\ndef clip(x):\n    \
             return [min(max(v, a), b) for v, a, b in zip(x, lo, hi)]\n\n\nX = [clip(x) for x in X]\nT = [clip(x) for x in T]\n",
            q = num(q),
            hi = num(1.0 - q)
        )),
    }
    if plan.scaling != Scaling::None {
        out.push_str("scale = fit_scaler(X)\nX = [scale(x) for x in X]\nT = [scale(x) for x in T]\n");
    }
    out.push_str("print(\"features:\", len(X[0]), \"training rows:\", len(X))\n");

    // The model (with its ensemble).
    let main = fit_call(&plan.model);
    match &plan.ensemble {
        Ensemble::None => out.push_str(&format!("\n\ndef fit(X, Y):\n    m = {main}\n    return lambda x: finish(m(x))\n")),
        Ensemble::Blend { with } => out.push_str(&format!(
            "\n\ndef fit(X, Y):\n    # Average the predictions of two different models.\n    a = {main}\n    b = {}\n    \
             return lambda x: [(u + v) / 2.0 for u, v in zip(finish(a(x)), finish(b(x)))]\n",
            fit_call(with)
        )),
        Ensemble::Bagging { n } => out.push_str(&format!(
            "\n\ndef fit(X_all, Y_all):\n    # Bagging: {n} models on bootstrap resamples, predictions averaged.\n    rng = random.Random(2)\n    \
             members = []\n    for _ in range({n}):\n        idx = [rng.randrange(len(X_all)) for _ in range(len(X_all))]\n        \
             X, Y = [X_all[i] for i in idx], [Y_all[i] for i in idx]\n        members.append({main})\n\n    \
             def predict(x):\n        ps = [finish(m(x)) for m in members]\n        return [sum(c) / len(ps) for c in zip(*ps)]\n\n    \
             return predict\n"
        )),
    }

    // Validation.
    match plan.validation {
        Validation::None => {}
        Validation::Holdout { percent } => out.push_str(&format!(
            "\n# Hold out {percent}% of the training rows to measure the model before refitting on everything.\n\
             order = list(range(len(X)))\nrandom.Random(3).shuffle(order)\ncut = len(order) * {percent} // 100\n\
             val, fit_part = order[:cut], order[cut:]\nm = fit([X[i] for i in fit_part], [Y[i] for i in fit_part])\n\
             print(\"validation {name}: %.4f\" % score([m(X[i]) for i in val], [Y[i] for i in val]))\n",
            name = if classify { "accuracy" } else { "rmse" }
        )),
        Validation::KFoldRidge { folds } => out.push_str(&format!(
            "\n# {folds}-fold cross-validation picks the ridge penalty; the winner replaces the model.\n\
             order = list(range(len(X)))\nrandom.Random(3).shuffle(order)\nresults = {{}}\n\
             for lam in [0.0001, 0.001, 0.01, 0.1, 1.0]:\n    total = 0.0\n    for f in range({folds}):\n        \
             val = set(order[f::{folds}])\n        tr = [i for i in order if i not in val]\n        \
             m = fit_ridge([X[i] for i in tr], [Y[i] for i in tr], lam)\n        \
             total += score([finish(m(X[i])) for i in val], [Y[i] for i in val])\n    results[lam] = total / {folds}\n    \
             print(\"lambda %g: cv {name} %.4f\" % (lam, results[lam]))\nbest = {pick}(results, key=results.get)\nprint(\"best lambda\", best)\n\n\n\
             def fit(X, Y):\n    m = fit_ridge(X, Y, best)\n    return lambda x: finish(m(x))\n",
            name = if classify { "accuracy" } else { "rmse" },
            pick = if classify { "max" } else { "min" }
        )),
    }

    out.push_str("\npredict = fit(X, Y)\npreds = [predict(x) for x in T]\n");
    if plan.data == DataStep::LogTarget {
        out.push_str("preds = [[math.expm1(v) for v in p] for p in preds]\n");
    }
    match plan.post {
        Post::None | Post::ClipProba { .. } => {}
        Post::Temperature { t } => out.push_str(&format!(
            "# Temperature {t}: sharpen (< 1) or soften (> 1) the probabilities.\npreds = [to_proba([v ** (1.0 / {t}) for v in p]) for p in preds]\n",
            t = num(t)
        )),
        Post::ClipRange => out.push_str(
            "# Clip predictions to the range of the training targets.\nY_raw = [target(r) for r in TRAIN_ROWS]\n\
             lo = [min(c) for c in zip(*Y_raw)]\nhi = [max(c) for c in zip(*Y_raw)]\n\
             preds = [[min(max(v, a), b) for v, a, b in zip(p, lo, hi)] for p in preds]\n",
        ),
    }
    out.push_str("write_submission(TEST_ROWS, preds)\nprint(\"wrote submission.csv for\", len(preds), \"rows\")\n");
    Ok(out)
}
