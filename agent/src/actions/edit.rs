//! File-changing actions (Write File, Edit Script (AI), Undo Edit Script) and the backups that make undo possible.
//!
//! Before any action overwrites a file, its previous content (or the fact that it did not exist) is pushed onto a
//! per-file stack in `DIR/backups/`, outside `work/`; Undo Edit Script pops it.

use super::{ActionDef, ActionError, Ctx, Outcome, dispatch};
use crate::reward::ActionKind;
use crate::workspace::Workspace;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn backup_dir(ws: &Workspace, file: &Path) -> PathBuf {
    let rel = ws.relative(file).replace('%', "%25").replace('/', "%2F");
    ws.root().join("backups").join(rel)
}

fn slots(dir: &Path) -> Vec<(u64, bool)> {
    let mut v: Vec<(u64, bool)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (num, absent) = match name.strip_suffix(".absent") {
                Some(n) => (n.to_string(), true),
                None => (name, false),
            };
            num.parse().ok().map(|n| (n, absent))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Push the current state of `file` (content, or absence) onto its backup stack.
pub(super) fn backup(ctx: &Ctx<'_>, file: &Path) -> Result<(), ActionError> {
    push_backup(ctx.ws, file)
}

/// Push the current state of `file` onto its backup stack (also used when restoring an episode from a trace).
pub(crate) fn push_backup(ws: &Workspace, file: &Path) -> Result<(), ActionError> {
    let dir = backup_dir(ws, file);
    let rel = ws.relative(file);
    let io = |source| ActionError::Io { path: rel.clone(), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let next = slots(&dir).last().map_or(0, |(n, _)| n + 1);
    if file.is_file() {
        std::fs::copy(file, dir.join(next.to_string())).map_err(io)?;
    } else {
        std::fs::write(dir.join(format!("{next}.absent")), b"").map_err(io)?;
    }
    Ok(())
}

fn write_with_backup(ctx: &mut Ctx<'_>, arg: &str, content: &str) -> Result<PathBuf, ActionError> {
    let path = ctx.ws.writable(arg)?;
    backup(ctx, &path)?;
    let io = |source| ActionError::Io { path: arg.trim().into(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, content).map_err(io)?;
    ctx.progress.pending_edit = true;
    Ok(path)
}

/// Drop the newest backup of `file` (what Undo consumed), when restoring an episode from a trace.
pub(crate) fn pop_backup(ws: &Workspace, file: &Path) {
    let dir = backup_dir(ws, file);
    if let Some((n, absent)) = slots(&dir).last().copied() {
        let name = if absent { format!("{n}.absent") } else { n.to_string() };
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Arguments of Write File.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// The file to create or overwrite.
    pub file_name: String,
    /// Its complete new content.
    pub content: String,
}

/// Write File: a direct edit, the whole content at once.
pub static WRITE_FILE: ActionDef = ActionDef {
    name: "Write File",
    description: "Use this to write a file (e.g. a python script) with exactly the given content, creating it or \
                  replacing it. Read-only data files cannot be overwritten.",
    args: &[
        ("file_name", "[a valid file name with relative path to current directory if needed]"),
        ("content", "[the complete content of the file as a JSON string]"),
    ],
    observation: "[A success message with the number of lines written, or an error message.]",
    run: |ctx, v| dispatch(ctx, v, write_file),
};

fn write_file(ctx: &mut Ctx<'_>, a: WriteFileArgs) -> Result<Outcome, ActionError> {
    let path = write_with_backup(ctx, &a.file_name, &a.content)?;
    let mut out = Outcome::new(
        format!("File {} written ({} lines).", a.file_name.trim(), a.content.lines().count()),
        ActionKind::Edit,
    );
    out.changed.push(path);
    Ok(out)
}

/// Arguments of Undo Edit Script.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndoArgs {
    /// The file whose last change to revert.
    pub script_name: String,
}

/// Undo Edit Script: restore the file as it was before its last change.
pub static UNDO_EDIT_SCRIPT: ActionDef = ActionDef {
    name: "Undo Edit Script",
    description: "Use this to undo the last edit of the python script.",
    args: &[("script_name", "[a valid python script name with relative path to current directory if needed]")],
    observation: "[The observation will be the content of the script before the last edit. If the script does not \
                  exist, the observation will be an error message.]",
    run: |ctx, v| dispatch(ctx, v, undo),
};

fn undo(ctx: &mut Ctx<'_>, a: UndoArgs) -> Result<Outcome, ActionError> {
    let path = ctx.ws.writable(&a.script_name)?;
    let dir = backup_dir(ctx.ws, &path);
    let name = a.script_name.trim().to_string();
    let Some((n, absent)) = slots(&dir).last().copied() else {
        return Err(ActionError::NothingToUndo(name));
    };
    let io = |source| ActionError::Io { path: name.clone(), source };
    let body = if absent {
        std::fs::remove_file(&path).map_err(io)?;
        std::fs::remove_file(dir.join(format!("{n}.absent"))).map_err(io)?;
        format!("The last edit created {name}; it has been removed.")
    } else {
        let slot = dir.join(n.to_string());
        let content = std::fs::read(&slot).map_err(io)?;
        std::fs::write(&path, &content).map_err(io)?;
        std::fs::remove_file(&slot).map_err(io)?;
        let text = String::from_utf8_lossy(&content);
        let shown: String = text.chars().take(8_000).collect();
        format!("Content of {name} after undo the most recent edit:\n{shown}")
    };
    ctx.progress.pending_edit = true;
    let mut out = Outcome::new(body, ActionKind::Edit);
    out.changed.push(path);
    Ok(out)
}

/// Arguments of Edit Script (AI).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditAiArgs {
    /// The script to edit (may not exist yet: then it is written from scratch).
    pub script_name: String,
    /// What to change.
    pub edit_instruction: String,
    /// Where to save the result.
    pub save_name: String,
}

/// Edit Script (AI): the helper LLM rewrites the script following an instruction.
pub static EDIT_SCRIPT_AI: ActionDef = ActionDef {
    name: "Edit Script (AI)",
    description: "Use this to do a relatively large but cohesive edit over a python script. Instead of editing the \
                  script directly, you should describe the edit instruction so that another AI can help you do this.",
    args: &[
        ("script_name", "[a valid python script name with relative path to current directory if needed. An empty \
                          script will be created if it does not exist.]"),
        ("edit_instruction", "[a detailed step by step description on how to edit it.]"),
        ("save_name", "[a valid file name with relative path to current directory if needed]"),
    ],
    observation: "[The observation will be the edited content of the script. If the script does not exist, the \
                  observation will be an error message. You should always double check whether the edit is correct. \
                  If it is far from correct, you can use the Undo Edit Script action to undo the edit.]",
    run: |ctx, v| dispatch(ctx, v, edit_ai),
};

fn edit_ai(ctx: &mut Ctx<'_>, a: EditAiArgs) -> Result<Outcome, ActionError> {
    // Without a helper LLM, the built-in training tasks have the offline editor; other tasks have none.
    let offline = ctx.helper.is_none() && crate::ideas::adapters::adapter(&ctx.task.name).is_some();
    if ctx.helper.is_none() && !offline {
        return Err(ActionError::NoEditor);
    }
    // Validate both paths before spending a helper call.
    ctx.ws.writable(&a.save_name)?;
    let old = match ctx.ws.existing_file(&a.script_name) {
        Ok(p) => std::fs::read_to_string(&p).map_err(|source| ActionError::Io { path: a.script_name.clone(), source })?,
        Err(crate::workspace::PathError::NotFound(_)) => String::new(),
        Err(e) => return Err(e.into()),
    };
    let (new, note) = match ctx.helper {
        Some(helper) => {
            let prompt = format!(
                "Given this python script:\n```python\n{old}\n```\nEdit the script by following the instruction:\n{}\n\
                 Provide the full code after the edit, making no other changes. Start the python code with \"```python\". ",
                a.edit_instruction
            );
            (extract_code(&helper.complete(&prompt)?), String::new())
        }
        None => {
            let e = crate::ideas::editor::edit(&ctx.task.name, &a.edit_instruction)
                .map_err(|e| ActionError::BadArgument(e.to_string()))?;
            let note = format!(
                "The offline editor matched the instruction to the change \"{}\" (similarity {:.2}) and wrote its complete \
                 script. ",
                e.change.text, e.similarity
            );
            (e.program, note)
        }
    };
    let path = write_with_backup(ctx, &a.save_name, &new)?;
    let body = format!(
        "{note}The edited file is saved to {}. Here is the diff, please check if the edit is correct and desirable:\n\n{}",
        a.save_name.trim(),
        line_diff(&old, &new)
    );
    let mut out = Outcome::new(body, ActionKind::Edit);
    out.changed.push(path);
    Ok(out)
}

/// The code inside the first ```python (or ```) fence of a reply, or the whole reply without fences.
pub fn extract_code(reply: &str) -> String {
    let start = reply.find("```python").map(|i| i + 9).or_else(|| reply.find("```").map(|i| i + 3));
    match start {
        Some(s) => {
            // Skip the rest of the fence line (a language tag), then take everything up to the closing fence.
            let after = &reply[s..];
            let body = after.find('\n').map_or("", |nl| &after[nl + 1..]);
            body[..body.find("```").unwrap_or(body.len())].to_string()
        }
        None => reply.to_string(),
    }
}

/// A minimal line diff (longest common subsequence): `-` removed, `+` added lines, unchanged lines omitted.
pub fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    if a.len() * b.len() > 4_000_000 {
        return format!("(files too long to diff; the new file has {} lines)", b.len());
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    if out.is_empty() { "(no changes)".into() } else { out.join("\n") }
}
