//! Text tasks built from generated sentences: spooky-author-identification (logloss, 3 classes),
//! detecting-insults-in-social-commentary (accuracy), jigsaw-toxic-comment-classification-challenge (auc, 6 columns),
//! feedback-prize-english-language-learning (mcrmse, 6 columns), learning-agency-lab-automated-essay-scoring-2 (qwk),
//! us-patent-phrase-to-phrase-matching (pearson).
//!
//! Labels depend on which words occur (author vocabularies, insult and toxicity lexicons, proficiency-dependent word
//! choice and errors, phrase concept clusters); the starters look only at length or surface overlap, so bag-of-words
//! models have a lot of headroom.

use super::common::{Generated, num, py_list, sigmoid, starter};
use crate::csvio::Table;
use crate::rng::Rng;

const LINEAR1: &str = include_str!("starters/linear1.py");
const BINNED: &str = include_str!("starters/binned.py");

const COMMON: [&str; 40] = [
    "the", "a", "of", "and", "to", "in", "that", "it", "was", "with", "as", "for", "on", "at", "by", "from", "his",
    "her", "this", "which", "but", "not", "all", "we", "one", "upon", "had", "there", "were", "so", "some", "into",
    "than", "then", "could", "would", "little", "more", "very", "time",
];

fn sentence(rng: &mut Rng, len: usize, mut word: impl FnMut(&mut Rng) -> String) -> String {
    let words: Vec<String> = (0..len).map(|_| word(rng)).collect();
    let mut s = words.join(" ");
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + &s[1..];
    }
    s
}

/// spooky-author-identification: EAP / HPL / MWS, multiclass logloss.
pub fn spooky(rng: &mut Rng) -> Generated {
    let authors = ["EAP", "HPL", "MWS"];
    let vocab: [&[&str]; 3] = [
        &["raven", "chamber", "madness", "tomb", "ghastly", "vault", "pendulum", "phantasm", "ratiocination", "dread",
          "velvet", "lunacy", "mesmeric", "cask", "amontillado", "sepulchre", "singular", "analysis", "idea", "excessive"],
        &["eldritch", "cyclopean", "gibbous", "antediluvian", "nameless", "blasphemous", "abyss", "squamous", "cult",
          "ancient", "horror", "whateley", "arkham", "stars", "fungoid", "nighted", "daemon", "unknown", "shunned", "sea"],
        &["misery", "affection", "wretched", "creature", "beloved", "despair", "countenance", "tears", "sorrow", "felix",
          "elizabeth", "mountains", "tranquillity", "benevolent", "friend", "heart", "hope", "adrian", "perdita", "raymond"],
    ];
    let lengths = [(18.0, 8.0), (24.0, 9.0), (21.0, 7.0)];
    let mut train = Table::new(["id", "text", "author"]);
    let mut test = Table::new(["id", "text"]);
    let header = ["id", "EAP", "HPL", "MWS"];
    let mut answers = Table::new(header);
    let n_train = 1500;
    for i in 0..2000 {
        let a = rng.weighted(&[0.4, 0.29, 0.31]);
        let len = (lengths[a].0 + lengths[a].1 * rng.normal()).round().clamp(4.0, 60.0) as usize;
        let text = sentence(rng, len, |rng| {
            let u = rng.uniform();
            if u < 0.12 {
                rng.pick(vocab[a]).to_string()
            } else if u < 0.15 {
                let other = rng.below(3);
                rng.pick(vocab[other]).to_string()
            } else {
                rng.pick(&COMMON).to_string()
            }
        }) + ".";
        let id = format!("id{:05}", (i * 7919 + 13) % 100_000);
        if i < n_train {
            train.push([id, text, authors[a].to_string()]);
        } else {
            test.push([id.clone(), text]);
            answers.push(std::iter::once(id).chain((0..3).map(|k| if k == a { "1" } else { "0" }.to_string())));
        }
    }
    let oracle = answers.clone();
    let mut g = Generated::new(
        "# Spooky Author Identification (miniature)\n\nIdentify the author of each sentence: Edgar Allan Poe (EAP), \
         HP Lovecraft (HPL) or Mary Shelley (MWS).\n\n## Data\n- `train.csv`: `id,text,author`.\n- `test.csv`: \
         `id,text`.\n\n## Evaluation\nMulti-class log loss. Write `submission.csv` with columns `id,EAP,HPL,MWS` \
         (probabilities)."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0.333333");
    g.starter(starter(
        BINNED,
        &format!(
            "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"id\"\nTARGETS = [\"author\"]\nOUTPUT = \"classes\"  # label | classes | positive\nCLASSES = {}\nPOSITIVE = \"\"\nBINS = 5\n\n\ndef feature(row):\n    return float(len(row[\"text\"].split()))",
            py_list(&authors)
        ),
    ));
    g
}

const NEUTRAL: [&str; 30] = [
    "game", "team", "article", "point", "think", "good", "really", "people", "agree", "season", "vote", "policy",
    "news", "great", "thanks", "interesting", "read", "city", "money", "price", "year", "player", "coach", "market",
    "story", "music", "video", "show", "weather", "school",
];
const INSULTS: [&str; 16] = [
    "idiot", "moron", "stupid", "loser", "clown", "dumb", "pathetic", "fool", "ignorant", "liar", "troll", "jerk",
    "worthless", "clueless", "imbecile", "coward",
];

/// detecting-insults-in-social-commentary: binary Insult, accuracy.
pub fn insults(rng: &mut Rng) -> Generated {
    let mut train = Table::new(["id", "Date", "Comment", "Insult"]);
    let mut test = Table::new(["id", "Date", "Comment"]);
    let (mut answers, mut oracle) = (Table::new(["id", "Insult"]), Table::new(["id", "Insult"]));
    let n_train = 1200;
    for i in 0..1700 {
        let insult = rng.chance(0.35);
        let len = 6 + rng.below(if insult { 14 } else { 24 });
        let mut text = sentence(rng, len, |rng| {
            let u = rng.uniform();
            if insult && u < 0.18 {
                rng.pick(&INSULTS).to_string()
            } else if u < 0.22 {
                rng.pick(&["you", "your", "you're"]).to_string()
            } else if u < 0.6 {
                rng.pick(&NEUTRAL).to_string()
            } else {
                rng.pick(&COMMON).to_string()
            }
        });
        if insult && !INSULTS.iter().any(|w| text.contains(w)) {
            text.push_str(&format!(" you {}", rng.pick(&INSULTS)));
        }
        // A few ambiguous comments: label noise.
        let label = if rng.chance(0.06) { !insult } else { insult };
        let id = (i + 1).to_string();
        let date = format!("2012{:02}{:02}{:02}{:02}00Z", 1 + rng.below(12), 1 + rng.below(28), rng.below(24), rng.below(60));
        let lab = |b: bool| if b { "1" } else { "0" }.to_string();
        if i < n_train {
            train.push([id, date, text, lab(label)]);
        } else {
            test.push([id.clone(), date, text]);
            answers.push([id.clone(), lab(label)]);
            oracle.push([id, lab(insult)]);
        }
    }
    let mut g = Generated::new(
        "# Detecting Insults in Social Commentary (miniature)\n\nPredict whether a comment is insulting to a \
         participant of the conversation.\n\n## Data\n- `train.csv`: `id,Date,Comment,Insult` (1 = insult).\n- \
         `test.csv`: `id,Date,Comment`.\n\n## Evaluation\nClassification accuracy of the 0/1 label. Write \
         `submission.csv` with columns `id,Insult`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0");
    g.starter(starter(
        BINNED,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"id\"\nTARGETS = [\"Insult\"]\nOUTPUT = \"label\"  # label | classes | positive\nCLASSES = []\nPOSITIVE = \"1\"\nBINS = 6\n\n\ndef feature(row):\n    return float(len(row[\"Comment\"]))",
    ));
    g
}

/// jigsaw-toxic-comment-classification-challenge: 6 labels, mean column auc.
pub fn jigsaw(rng: &mut Rng) -> Generated {
    let labels = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"];
    let lexicon: [&[&str]; 6] = [
        &["hate", "awful", "disgusting", "garbage", "trash"],
        &["die", "kill", "destroy", "burn"],
        &["damn", "crap", "hell", "bloody", "freaking"],
        &["hurt", "find", "coming", "watch", "punch"],
        &["idiot", "moron", "loser", "stupid", "fool"],
        &["foreigners", "outsiders", "those", "kind", "immigrants"],
    ];
    let mut train = Table::new(std::iter::once("id").chain(["comment_text"]).chain(labels));
    let mut test = Table::new(["id", "comment_text"]);
    let header: Vec<&str> = std::iter::once("id").chain(labels).collect();
    let (mut answers, mut oracle) = (Table::new(header.clone()), Table::new(header));
    let n_train = 1500;
    for i in 0..2200 {
        let toxic = rng.chance(0.3);
        let mut y = [toxic, false, false, false, false, false];
        if toxic {
            y[1] = rng.chance(0.25);
            y[2] = rng.chance(0.5);
            y[3] = rng.chance(0.15);
            y[4] = rng.chance(0.5);
            y[5] = rng.chance(0.15);
        }
        let len = 8 + rng.below(25);
        let mut text = sentence(rng, len, |rng| {
            let u = rng.uniform();
            if u < 0.3 { rng.pick(&NEUTRAL).to_string() } else { rng.pick(&COMMON).to_string() }
        });
        for (k, on) in y.iter().enumerate() {
            // Each active label inserts words of its lexicon; inactive ones occasionally appear harmlessly.
            let n = if *on { 1 + rng.below(2) } else if rng.chance(0.05) { 1 } else { 0 };
            for _ in 0..n {
                text.push(' ');
                let w = *rng.pick(lexicon[k]);
                text.push_str(w);
            }
        }
        if toxic && rng.chance(0.4) {
            text = text.to_uppercase() + "!!";
        }
        let id = format!("{:016x}", (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let cells: Vec<String> = y.iter().map(|b| if *b { "1" } else { "0" }.to_string()).collect();
        if i < n_train {
            train.push([id, text].into_iter().chain(cells));
        } else {
            test.push([id.clone(), text]);
            answers.push(std::iter::once(id.clone()).chain(cells.clone()));
            oracle.push(std::iter::once(id).chain(cells));
        }
    }
    let mut g = Generated::new(
        "# Toxic Comment Classification Challenge (miniature)\n\nPredict the probability of six kinds of toxicity for \
         each comment.\n\n## Data\n- `train.csv`: `id,comment_text` and six 0/1 labels \
         `toxic,severe_toxic,obscene,threat,insult,identity_hate`.\n- `test.csv`: `id,comment_text`.\n\n## \
         Evaluation\nMean column-wise ROC AUC over the six labels. Write `submission.csv` with `id` and the six \
         probability columns."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0.5");
    g.starter(starter(
        BINNED,
        &format!(
            "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"id\"\nTARGETS = {}\nOUTPUT = \"positive\"  # label | classes | positive\nCLASSES = []\nPOSITIVE = \"1\"\nBINS = 5\n\n\ndef feature(row):\n    return float(len(row[\"comment_text\"]))",
            py_list(&labels)
        ),
    ));
    g
}

const SIMPLE: [&str; 24] = [
    "good", "bad", "thing", "people", "like", "think", "very", "many", "because", "school", "friend", "help", "work",
    "want", "big", "important", "make", "student", "time", "day", "learn", "go", "know", "life",
];
const ADVANCED: [&str; 24] = [
    "furthermore", "consequently", "significant", "perspective", "nevertheless", "demonstrate", "essential",
    "opportunity", "responsibility", "comprehensive", "alternatively", "beneficial", "substantial", "evaluate",
    "moreover", "analyze", "diverse", "fundamental", "perceive", "advocate", "ultimately", "circumstances",
    "collaborate", "enhance",
];
const ERRORS: [&str; 10] = ["dont", "alot", "becuase", "thier", "i", "they is", "more better", "wich", "whit", "doesnt"];

/// An essay whose length, vocabulary and error rate depend on latent skills.
fn essay(rng: &mut Rng, length: f64, vocab: f64, errors: f64) -> String {
    let n_sent = (6.0 + 3.0 * length + 1.5 * rng.normal()).round().clamp(2.0, 20.0) as usize;
    let p_adv = sigmoid(-1.8 + 1.1 * vocab);
    let p_err = sigmoid(-2.2 - 1.1 * errors);
    let mut out = Vec::new();
    for _ in 0..n_sent {
        let len = 6 + rng.below(10);
        out.push(
            sentence(rng, len, |rng| {
                let u = rng.uniform();
                if u < p_err * 0.5 {
                    rng.pick(&ERRORS).to_string()
                } else if u < 0.3 {
                    if rng.chance(p_adv) { rng.pick(&ADVANCED) } else { rng.pick(&SIMPLE) }.to_string()
                } else {
                    rng.pick(&COMMON).to_string()
                }
            }) + if rng.chance(p_err) { "" } else { "." },
        );
    }
    out.join(" ")
}

/// feedback-prize-english-language-learning: six analytic scores 1.0–5.0, mcrmse.
pub fn feedback(rng: &mut Rng) -> Generated {
    let traits = ["cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions"];
    let mut train = Table::new(["text_id", "full_text"].into_iter().chain(traits));
    let mut test = Table::new(["text_id", "full_text"]);
    let header: Vec<&str> = std::iter::once("text_id").chain(traits).collect();
    let (mut answers, mut oracle) = (Table::new(header.clone()), Table::new(header));
    let n_train = 800;
    let half = |x: f64| ((x * 2.0).round() / 2.0).clamp(1.0, 5.0);
    for i in 0..1100 {
        let z = rng.normal();
        let (v, e, l) = (z + 0.6 * rng.normal(), z + 0.6 * rng.normal(), z + 0.6 * rng.normal());
        let text = essay(rng, l, v, e);
        // Expected scores given the latent skills; observed = rater noise + rounding to halves.
        let clean = [3.0 + 0.4 * z + 0.2 * l, 3.0 + 0.35 * z + 0.25 * e, 3.1 + 0.3 * z + 0.35 * v,
            3.0 + 0.35 * z + 0.2 * v, 2.9 + 0.3 * z + 0.35 * e, 3.0 + 0.3 * z + 0.3 * e];
        let obs: Vec<String> = clean.iter().map(|c| num(half(c + 0.3 * rng.normal()), 1)).collect();
        let id = format!("{:012X}", (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16);
        if i < n_train {
            train.push([id, text].into_iter().chain(obs));
        } else {
            test.push([id.clone(), text]);
            answers.push(std::iter::once(id.clone()).chain(obs));
            oracle.push(std::iter::once(id).chain(clean.iter().map(|c| num(c.clamp(1.0, 5.0), 3))));
        }
    }
    let mut g = Generated::new(
        "# Feedback Prize - English Language Learning (miniature)\n\nScore essays by English language learners on six \
         analytic measures, each from 1.0 to 5.0 in steps of 0.5.\n\n## Data\n- `train.csv`: `text_id,full_text` and \
         `cohesion,syntax,vocabulary,phraseology,grammar,conventions`.\n- `test.csv`: `text_id,full_text`.\n\n## \
         Evaluation\nMCRMSE: the mean over the six columns of the root mean squared error. Write `submission.csv` \
         with `text_id` and the six score columns."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("3.0");
    g.starter(starter(
        LINEAR1,
        &format!(
            "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"text_id\"\nTARGETS = {}\n\n\ndef feature(row):\n    return float(len(row[\"full_text\"]))\n\n\ndef postprocess(y):\n    return round(min(max(y, 1.0), 5.0), 3)",
            py_list(&traits)
        ),
    ));
    g
}

/// learning-agency-lab-automated-essay-scoring-2: holistic score 1–6, qwk.
pub fn aes2(rng: &mut Rng) -> Generated {
    let mut train = Table::new(["essay_id", "full_text", "score"]);
    let mut test = Table::new(["essay_id", "full_text"]);
    let (mut answers, mut oracle) = (Table::new(["essay_id", "score"]), Table::new(["essay_id", "score"]));
    let n_train = 1000;
    for i in 0..1400 {
        let z = rng.normal();
        let (l, v, e) = (0.4 * z + 0.8 * rng.normal(), z + 0.5 * rng.normal(), z + 0.5 * rng.normal());
        let text = essay(rng, l, v, e);
        let clean = 3.2 + 1.1 * z;
        let score = (clean + 0.5 * rng.normal()).round().clamp(1.0, 6.0);
        let id = format!("{:07x}", (i as u64 + 3).wrapping_mul(0x1000_0000_01b3) & 0xfff_ffff);
        if i < n_train {
            train.push([id, text, num(score, 0)]);
        } else {
            test.push([id.clone(), text]);
            answers.push([id.clone(), num(score, 0)]);
            oracle.push([id, num(clean.round().clamp(1.0, 6.0), 0)]);
        }
    }
    let mut g = Generated::new(
        "# Learning Agency Lab - Automated Essay Scoring 2.0 (miniature)\n\nPredict the holistic score (1–6) of each \
         student essay.\n\n## Data\n- `train.csv`: `essay_id,full_text,score`.\n- `test.csv`: `essay_id,full_text`.\n\n\
         ## Evaluation\nQuadratic weighted kappa between predicted and actual integer scores. Write `submission.csv` \
         with columns `essay_id,score` (integers)."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("3");
    g.starter(starter(
        LINEAR1,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"essay_id\"\nTARGETS = [\"score\"]\n\n\ndef feature(row):\n    return float(len(row[\"full_text\"].split(\".\")))\n\n\ndef postprocess(y):\n    return int(min(max(round(y), 1), 6))",
    ));
    g
}

/// us-patent-phrase-to-phrase-matching: similarity of phrase pairs in context, pearson.
pub fn patent(rng: &mut Rng) -> Generated {
    let heads = ["valve", "sensor", "circuit", "membrane", "bearing", "antenna", "polymer", "catalyst", "spring",
        "lens", "rotor", "filter", "battery", "coating", "gear", "nozzle"];
    let mods = ["fluid", "thermal", "optical", "magnetic", "flexible", "rotary", "porous", "electric", "hydraulic",
        "digital", "ceramic", "acoustic"];
    let syn = ["device", "unit", "element", "member", "assembly", "component"];
    let contexts = ["F16", "G01", "H01", "B01", "C08", "H04", "A61", "F02"];
    // 48 concepts = (modifier, head); concepts sharing a head are related.
    let mut train = Table::new(["id", "anchor", "target", "context", "score"]);
    let mut test = Table::new(["id", "anchor", "target", "context"]);
    let (mut answers, mut oracle) = (Table::new(["id", "score"]), Table::new(["id", "score"]));
    let n_train = 1500;
    for i in 0..2000 {
        let (h, m) = (rng.below(heads.len()), rng.below(mods.len()));
        let anchor = format!("{} {}", mods[m], heads[h]);
        let kind = rng.weighted(&[0.15, 0.25, 0.25, 0.2, 0.15]);
        let (target, clean) = match kind {
            // Same concept, different wording.
            0 => (format!("{} {}", mods[m], rng.pick(&syn)), 1.0),
            1 => (format!("{} {} {}", mods[m], heads[h], rng.pick(&syn)), 0.75),
            // Same head, other modifier: related.
            2 => (format!("{} {}", mods[(m + 1 + rng.below(mods.len() - 1)) % mods.len()], heads[h]), 0.5),
            // Same modifier, other head: shares a word but unrelated.
            3 => (format!("{} {}", mods[m], heads[(h + 1 + rng.below(heads.len() - 1)) % heads.len()]), 0.25),
            _ => (format!("{} {}", rng.pick(&mods), heads[(h + 1 + rng.below(heads.len() - 1)) % heads.len()]), 0.0),
        };
        let score = if rng.chance(0.1) { *rng.pick(&[0.0, 0.25, 0.5, 0.75, 1.0]) } else { clean };
        let id = format!("{:016x}", (i as u64 + 5).wrapping_mul(0xff51_afd7_ed55_8ccd));
        let ctx = rng.pick(&contexts).to_string();
        if i < n_train {
            train.push([id, anchor, target, ctx, num(score, 2)]);
        } else {
            test.push([id.clone(), anchor, target, ctx]);
            answers.push([id.clone(), num(score, 2)]);
            oracle.push([id, num(clean, 2)]);
        }
    }
    let mut g = Generated::new(
        "# U.S. Patent Phrase to Phrase Matching (miniature)\n\nRate the semantic similarity (0, 0.25, 0.5, 0.75, 1) \
         of phrase pairs from patents, given the patent's CPC context.\n\n## Data\n- `train.csv`: \
         `id,anchor,target,context,score`.\n- `test.csv`: `id,anchor,target,context`.\n\n## Evaluation\nPearson \
         correlation between predicted and actual scores. Write `submission.csv` with columns `id,score`."
            .into(),
        answers,
        oracle,
    );
    g.data("train.csv", &train);
    g.data("test.csv", &test);
    g.sample_submission("0.5");
    g.starter(starter(
        LINEAR1,
        "TRAIN, TEST = \"train.csv\", \"test.csv\"\nID = \"id\"\nTARGETS = [\"score\"]\n\n\ndef feature(row):\n    a, b = set(row[\"anchor\"].split()), set(row[\"target\"].split())\n    return len(a & b) / len(a | b)\n\n\ndef postprocess(y):\n    return round(y, 4)",
    ));
    g
}
