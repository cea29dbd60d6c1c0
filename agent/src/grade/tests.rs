//! Grader tests on hand-computed cases: matching by id, multi-column rules, and every error path.

use super::*;

fn table(text: &str) -> Table {
    let mut lines = text.lines();
    let mut t = Table::new(lines.next().unwrap().split(','));
    for l in lines {
        t.push(l.split(','));
    }
    t
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn rows_are_matched_by_id_not_order_and_first_column_is_id_whatever_its_name() {
    let answers = table("Image,label\na,cat\nb,dog\nc,dog");
    let sub = table("whatever,label\nc,dog\na,cat\nb,cat");
    close(grade_tables(Metric::Accuracy, &answers, &sub).unwrap(), 2.0 / 3.0);
    let ans = table("id,Transported\n1,True\n2,False");
    let sub = table("id,Transported\n2,false\n1,True");
    close(grade_tables(Metric::Accuracy, &ans, &sub).unwrap(), 1.0);
}

#[test]
fn multi_column_auc_and_rmsle_are_column_means() {
    let ans = table("id,a,b\n1,1,0\n2,0,1\n3,1,1\n4,0,0");
    // Column a: perfect (1.0). Column b: scores 0.5 for all → 0.5.
    let sub = table("id,b,a\n1,0.5,0.9\n2,0.5,0.1\n3,0.5,0.8\n4,0.5,0.2");
    close(grade_tables(Metric::Auc, &ans, &sub).unwrap(), 0.75);
    let ans = table("id,x,y\n1,1,3\n2,1,3");
    let sub = table("id,x,y\n1,2,3\n2,1,3");
    let col_x = ((2f64.ln() - 3f64.ln()).powi(2) / 2.0).sqrt();
    close(grade_tables(Metric::Rmsle, &ans, &sub).unwrap(), col_x / 2.0);
}

#[test]
fn multiclass_logloss_uses_one_hot_answers() {
    let ans = table("id,EAP,HPL,MWS\n1,1,0,0\n2,0,0,1");
    let sub = table("id,EAP,HPL,MWS\n1,0.5,0.25,0.25\n2,0.1,0.1,0.6");
    // Row 2 sums to 0.8 → renormalised 0.75.
    close(grade_tables(Metric::LogLoss, &ans, &sub).unwrap(), -(0.5f64.ln() + 0.75f64.ln()) / 2.0);
}

#[test]
fn mcrmse_qwk_map5_pearson_mae() {
    let ans = table("text_id,c1,c2\n1,3.0,2.0\n2,4.0,2.0");
    let sub = table("text_id,c1,c2\n1,3.5,2.0\n2,4.5,3.0");
    // c1 rmse 0.5; c2 rmse sqrt(0.5).
    close(grade_tables(Metric::Mcrmse, &ans, &sub).unwrap(), (0.5 + 0.5f64.sqrt()) / 2.0);
    close(grade_tables(Metric::Mae, &ans, &sub).unwrap(), (0.5 + 0.0 + 0.5 + 1.0) / 4.0);
    let ans = table("essay_id,score\na,1\nb,2\nc,3\nd,4\ne,3");
    let sub = table("essay_id,score\na,1\nb,2.0\nc,4\nd,4\ne,2");
    close(grade_tables(Metric::Qwk, &ans, &sub).unwrap(), 0.838_709_677_419_354_9);
    let ans = table("Image,Id\n1.jpg,w_1\n2.jpg,new_whale");
    let sub = table("Image,Id\n2.jpg,w_3 new_whale w_1\n1.jpg,w_1 w_2");
    close(grade_tables(Metric::MapAt5, &ans, &sub).unwrap(), (1.0 + 0.5) / 2.0);
    let ans = table("id,score\n1,1\n2,2\n3,3\n4,4");
    let sub = table("id,score\n1,1\n2,3\n3,2\n4,4");
    close(grade_tables(Metric::Pearson, &ans, &sub).unwrap(), 0.8);
}

#[test]
fn errors_name_the_culprit() {
    let ans = table("id,y\n1,0\n2,1");
    let cases = [
        ("id,z\n1,0\n2,1", "missing column `y`"),
        ("id,y\n1,0\n1,1", "duplicate id `1`"),
        ("id,y\n1,0", "missing 1 id(s), first `2`"),
        ("id,y\n1,0\n2,1\n3,1", "unexpected id(s), first `3`"),
        ("id,y\n1,0.3\n2,abc", "row id `2`, column `y`: `abc` is not a finite number"),
        ("id,y\n1,0.3\n2,nan", "`nan` is not a finite number"),
    ];
    for (sub, expected) in cases {
        let e = grade_tables(Metric::LogLoss, &ans, &table(sub)).unwrap_err().to_string();
        assert!(e.contains(expected), "{e} should contain {expected}");
    }
    let e = grade_tables(Metric::Qwk, &table("id,s\n1,1\n2,2"), &table("id,s\n1,1.5\n2,2")).unwrap_err();
    assert!(e.to_string().contains("not an integer rating"), "{e}");
    let e = grade_tables(Metric::Auc, &table("id,s\n1,1\n2,1"), &table("id,s\n1,0.5\n2,0.2")).unwrap_err();
    assert!(e.to_string().contains("only one class"), "{e}");
    let e = grade_tables(Metric::Accuracy, &table("id"), &table("id")).unwrap_err();
    assert!(matches!(e, GradeError::NoTargets(_)));
}

#[test]
fn grade_reads_files_and_reports_paths() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    std::fs::write(&a, "id,y\n1,5\n2,7\n").unwrap();
    let s = dir.path().join("s.csv");
    std::fs::write(&s, "id,y\n2,8\n1,5\n").unwrap();
    close(grade(Metric::Rmse, &a, &s).unwrap(), 0.5f64.sqrt());
    let e = grade(Metric::Rmse, &a, &dir.path().join("nope.csv")).unwrap_err().to_string();
    assert!(e.contains("nope.csv"), "{e}");
}
