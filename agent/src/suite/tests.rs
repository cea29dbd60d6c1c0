//! Suite tests: generation is deterministic, every starter runs within its time budget and scores its stated baseline,
//! and the oracle leaves clear headroom.

use super::*;
use crate::sandbox::{self, Limits, Request, Termination};
use std::time::Duration;

fn python_available() -> bool {
    std::process::Command::new("python3").arg("-c").arg("1").status().is_ok_and(|s| s.success())
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generation_is_deterministic_and_seed_dependent() {
    let dir = tempfile::tempdir().unwrap();
    for b in [builtin("spaceship-titanic").unwrap(), builtin("spooky-author-identification").unwrap()] {
        prepare(b, 7, &dir.path().join("a")).unwrap();
        prepare(b, 7, &dir.path().join("b")).unwrap();
        prepare(b, 8, &dir.path().join("c")).unwrap();
        let (a, bb, c) = (files(&dir.path().join("a")), files(&dir.path().join("b")), files(&dir.path().join("c")));
        assert_eq!(a, bb, "{}", b.name);
        assert_ne!(a, c, "{}", b.name);
        std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    }
}

#[test]
fn suite_has_nine_train_and_ten_held_out_tasks() {
    assert_eq!(SUITE.iter().filter(|b| b.split == Split::Train).count(), 9);
    assert_eq!(SUITE.iter().filter(|b| b.split == Split::HeldOut).count(), 10);
    assert!(builtin("cifar-10").is_some() && builtin("nope").is_none());
}

/// Run one starter in the sandbox and grade it.
fn run_starter(spec: &TaskSpec) -> (f64, Duration) {
    let work = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(spec.public_dir()).unwrap().flatten() {
        std::fs::copy(e.path(), work.path().join(e.file_name())).unwrap();
    }
    let argv = spec.run_argv(&spec.script);
    let env = crate::actions::SandboxConfig::scrubbed_env(work.path(), 1);
    let limits = Limits { wall: Duration::from_secs(60), ..Limits::default() };
    let out = sandbox::run(&Request { argv: &argv, cwd: work.path(), env: &env, limits: &limits, namespaces: false }).unwrap();
    assert_eq!(out.termination, Termination::Exited(0), "{}: {}", spec.name, out.output);
    let m = grade::grade(spec.metric, &spec.answers_path(), &work.path().join("submission.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    (m, out.duration)
}

#[test]
fn every_starter_runs_and_scores_its_baseline_with_headroom() {
    if !python_available() {
        eprintln!("python3 not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let specs = prepare_all(DEFAULT_SEED, dir.path()).unwrap();
    // Two workers: CI machines have two cores.
    let results: Vec<(String, f64, f64, f64, Duration)> = std::thread::scope(|s| {
        let halves: Vec<_> = specs
            .chunks(specs.len().div_ceil(2))
            .map(|chunk| s.spawn(move || chunk.iter().map(|t| {
                let (m, d) = run_starter(t);
                (t.name.clone(), m, t.m_init, t.m_best, d)
            }).collect::<Vec<_>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (name, m, m_init, m_best, d) in &results {
        eprintln!("{name:50} starter {m:.6} baseline {m_init:.6} best {m_best:.6} in {:.2}s", d.as_secs_f64());
        let b = builtin(name).unwrap();
        // Written so that a NaN (unmeasured) baseline fails.
        let matches = (m - m_init).abs() <= 1e-6 * m_init.abs().max(1.0);
        if !matches {
            failures.push(format!("{name}: starter scored {m}, stated baseline {m_init}"));
        }
        if d.as_secs_f64() > 10.0 {
            failures.push(format!("{name}: starter took {d:?}"));
        }
        // Headroom: the oracle must beat the starter by at least 10% of the starter's distance to the ideal.
        let ideal = match b.metric.direction() {
            crate::metric::Direction::Maximize => 1.0,
            crate::metric::Direction::Minimize => 0.0,
        };
        let gain = b.metric.direction().sign() * (m_best - m);
        let enough = gain >= 0.1 * (ideal - m).abs();
        if !enough {
            failures.push(format!("{name}: too little headroom (starter {m}, best {m_best})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Better scripts, standard library only: the signal is learnable beyond the starter, not only by the oracle.
const IMPROVED: [(&str, &str); 3] = [
    ("cifar-10", r#"
import csv, math
def read(p): return list(csv.DictReader(open(p)))
def norm(r, cols):
    v = [float(r[c]) for c in cols]; m = sum(v) / len(v); s = math.sqrt(sum((x - m) ** 2 for x in v) / len(v)) or 1.0
    return [(x - m) / s for x in v]
tr, te = read('train.csv'), read('test.csv')
cols = [c for c in te[0] if c != 'id']
sums, n = {}, {}
for r in tr:
    v = norm(r, cols); a = sums.setdefault(r['label'], [0.0] * len(v)); n[r['label']] = n.get(r['label'], 0) + 1
    for i, x in enumerate(v): a[i] += x
cent = {y: [x / n[y] for x in a] for y, a in sums.items()}
with open('submission.csv', 'w') as f:
    f.write('id,label\n')
    for r in te:
        v = norm(r, cols)
        f.write(r['id'] + ',' + min(cent, key=lambda y: sum((a - b) ** 2 for a, b in zip(v, cent[y]))) + '\n')
"#),
    ("ogbn-arxiv", r#"
import csv
from collections import Counter
lab = {r['node_id']: r['label'] for r in csv.DictReader(open('train.csv'))}
nb = {}
for r in csv.DictReader(open('edges.csv')):
    nb.setdefault(r['source'], []).append(r['target']); nb.setdefault(r['target'], []).append(r['source'])
top = Counter(lab.values()).most_common(1)[0][0]
with open('submission.csv', 'w') as f:
    f.write('node_id,label\n')
    for r in csv.DictReader(open('test.csv')):
        votes = Counter(lab[m] for m in nb.get(r['node_id'], []) if m in lab)
        f.write(r['node_id'] + ',' + (votes.most_common(1)[0][0] if votes else top) + '\n')
"#),
    ("spooky-author-identification", r#"
import csv, math
tr = list(csv.DictReader(open('train.csv'))); te = list(csv.DictReader(open('test.csv')))
A = ['EAP', 'HPL', 'MWS']; wc = {a: {} for a in A}; tot = {a: 0 for a in A}; prior = {a: 1 for a in A}
for r in tr:
    prior[r['author']] += 1
    for w in r['text'].lower().strip('.').split():
        wc[r['author']][w] = wc[r['author']].get(w, 0) + 1; tot[r['author']] += 1
V = len({w for a in A for w in wc[a]})
with open('submission.csv', 'w') as f:
    f.write('id,EAP,HPL,MWS\n')
    for r in te:
        s = {a: math.log(prior[a]) + sum(math.log((wc[a].get(w, 0) + 1) / (tot[a] + V)) for w in r['text'].lower().strip('.').split()) for a in A}
        m = max(s.values()); e = {a: math.exp(s[a] - m) for a in A}; z = sum(e.values())
        f.write(r['id'] + ',' + ','.join('%.6f' % (e[a] / z) for a in A) + '\n')
"#),
];

#[test]
fn simple_better_scripts_beat_the_starters() {
    if !python_available() {
        eprintln!("python3 not available; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in IMPROVED {
        let b = builtin(name).unwrap();
        let mut spec = prepare(b, DEFAULT_SEED, &dir.path().join(name)).unwrap();
        std::fs::write(spec.public_dir().join("better.py"), script).unwrap();
        spec.script = "better.py".into();
        let (m, _) = run_starter(&spec);
        let gain = b.metric.direction().sign() * (m - spec.m_init);
        eprintln!("{name}: starter {:.4}, better script {m:.4}", spec.m_init);
        assert!(gain > 0.05 * spec.m_init.abs().max(0.1), "{name}: better script {m} vs starter {}", spec.m_init);
    }
}
