//! Read-only actions (List Files, Inspect Script Lines, Understand File) and Copy File.

use super::{ActionDef, ActionError, Ctx, Outcome, dispatch, lenient_usize};
use crate::reward::ActionKind;
use serde::Deserialize;
use std::path::Path;

/// Largest file Understand File and Inspect Script Lines read, in bytes.
const MAX_READ: u64 = 5 << 20;

fn read_text(ctx: &Ctx<'_>, arg: &str) -> Result<String, ActionError> {
    let path = ctx.ws.existing_file(arg)?;
    let len = std::fs::metadata(&path).map_err(|source| ActionError::Io { path: arg.into(), source })?.len();
    if len > MAX_READ {
        return Err(ActionError::BadArgument(format!(
            "`{arg}` is {len} bytes; read large files from a script instead"
        )));
    }
    let bytes = std::fs::read(&path).map_err(|source| ActionError::Io { path: arg.into(), source })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Arguments of List Files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilesArgs {
    /// A folder relative to `work/`.
    pub dir_path: String,
}

/// List Files: `ls -F` of a folder (`/` marks folders, `@` links), sorted.
pub static LIST_FILES: ActionDef = ActionDef {
    name: "List Files",
    description: "Use this to navigate the file system.",
    args: &[("dir_path", "[a valid relative path to a directory, such as \".\" or \"folder1/folder2\"]")],
    observation: "[The observation will be a list of files and folders in dir_path or current directory is dir_path is \
                  empty, or an error message if dir_path is invalid.]",
    run: |ctx, v| dispatch(ctx, v, list_files),
};

fn list_files(ctx: &mut Ctx<'_>, a: ListFilesArgs) -> Result<Outcome, ActionError> {
    let arg = if a.dir_path.trim().is_empty() { "." } else { a.dir_path.as_str() };
    let dir = ctx.ws.existing(arg)?;
    if !dir.is_dir() {
        return Err(crate::workspace::PathError::WrongType { path: arg.into(), expected: "directory" }.into());
    }
    let io = |source| ActionError::Io { path: arg.into(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let ft = entry.file_type().map_err(io)?;
        let mark = if ft.is_symlink() {
            "@"
        } else if ft.is_dir() {
            "/"
        } else {
            ""
        };
        names.push(format!("{}{mark}", entry.file_name().to_string_lossy()));
    }
    names.sort();
    let body = if names.is_empty() { "(empty directory)".to_string() } else { names.join("\n") };
    Ok(Outcome::new(body, ActionKind::NonEdit))
}

/// Arguments of Copy File.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyFileArgs {
    /// An existing file.
    pub source: String,
    /// The new path (not read-only data).
    pub destination: String,
}

/// Copy File: copy a file inside `work/` (links pointing outside are refused; the copy is a regular file).
pub static COPY_FILE: ActionDef = ActionDef {
    name: "Copy File",
    description: "Use this to copy a file to a new location with a new name.",
    args: &[
        ("source", "[a valid file name with relative path to current directory if needed]"),
        ("destination", "[a valid file name with relative path to current directory if needed]"),
    ],
    observation: "[A success message if the file is copied successfully, or an error message if the file cannot be \
                  copied.]",
    run: |ctx, v| dispatch(ctx, v, copy_file),
};

fn copy_file(ctx: &mut Ctx<'_>, a: CopyFileArgs) -> Result<Outcome, ActionError> {
    let src = ctx.ws.existing_file(&a.source)?;
    let dst = ctx.ws.writable(&a.destination)?;
    super::edit::backup(ctx, &dst)?;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ActionError::Io { path: a.destination.clone(), source })?;
    }
    let bytes = std::fs::read(&src).map_err(|source| ActionError::Io { path: a.source.clone(), source })?;
    std::fs::write(&dst, bytes).map_err(|source| ActionError::Io { path: a.destination.clone(), source })?;
    let mut out = Outcome::new(
        format!("File {} copied to {}", a.source.trim(), a.destination.trim()),
        ActionKind::NonEdit,
    );
    out.changed.push(dst);
    Ok(out)
}

/// Arguments of Inspect Script Lines.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectArgs {
    /// The file.
    pub script_name: String,
    /// First line, 1-based.
    #[serde(deserialize_with = "lenient_usize")]
    pub start_line_number: usize,
    /// Last line, inclusive.
    #[serde(deserialize_with = "lenient_usize")]
    pub end_line_number: usize,
}

/// Inspect Script Lines: show up to 100 lines of a file.
pub static INSPECT_SCRIPT_LINES: ActionDef = ActionDef {
    name: "Inspect Script Lines",
    description: "Use this to inspect specific part of a python script precisely, or the full content of a short \
                  script. The number of lines to display is limited to 100 lines. This is especially helpful when \
                  debugging.",
    args: &[
        ("script_name", "[a valid python script name with relative path to current directory if needed]"),
        ("start_line_number", "[a valid line number]"),
        ("end_line_number", "[a valid line number]"),
    ],
    observation: "[The observation will be the content of the script between start_line_number and end_line_number. \
                  If the script does not exist, the observation will be an error message.]",
    run: |ctx, v| dispatch(ctx, v, inspect),
};

fn inspect(ctx: &mut Ctx<'_>, a: InspectArgs) -> Result<Outcome, ActionError> {
    let text = read_text(ctx, &a.script_name)?;
    let lines: Vec<&str> = text.lines().collect();
    let (start, end) = (a.start_line_number.max(1), a.end_line_number);
    if end < start {
        return Err(ActionError::BadArgument(format!("end_line_number {end} is before start_line_number {start}")));
    }
    if end - start + 1 > 100 {
        return Err(ActionError::BadArgument(format!(
            "the number of lines to display is limited to 100 lines (asked for {start}..={end})"
        )));
    }
    let shown: Vec<&str> = lines.iter().skip(start - 1).take(end + 1 - start).copied().collect();
    let body = format!("Here are the lines (the file ends at line {}):\n\n{}", lines.len(), shown.join("\n"));
    Ok(Outcome::new(body, ActionKind::NonEdit))
}

/// Arguments of Understand File.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderstandArgs {
    /// The file.
    pub file_name: String,
    /// What to look for.
    pub things_to_look_for: String,
}

/// Understand File: the helper LLM summarises a file; without one, a deterministic excerpt.
pub static UNDERSTAND_FILE: ActionDef = ActionDef {
    name: "Understand File",
    description: "Use this to read the whole file and understand certain aspects. You should provide detailed \
                  description on what to look for and what should be returned. To get a better understanding of the \
                  file, you can use Inspect Script Lines action to inspect specific part of the file.",
    args: &[
        ("file_name", "[a valid file name with relative path to current directory if needed]"),
        ("things_to_look_for", "[a detailed description on what to look for and what should returned]"),
    ],
    observation: "[The observation will be a description of relevant content and lines in the file. If the file does \
                  not exist, the observation will be an error message.]",
    run: |ctx, v| dispatch(ctx, v, understand),
};

fn understand(ctx: &mut Ctx<'_>, a: UnderstandArgs) -> Result<Outcome, ActionError> {
    let text = read_text(ctx, &a.file_name)?;
    let body = match ctx.helper {
        Some(h) => {
            let clipped: String = text.chars().take(12_000).collect();
            let prompt = format!(
                "Given this (partial) file from line 1:\n```\n{clipped}\n```\nHere is a detailed description on what \
                 to look for and what should returned: {}\nThe description should short and also reference crtical \
                 lines in the script relevant to what is being looked for. Only describe what is objectively \
                 confirmed by the file content. Do not include guessed numbers.",
                a.things_to_look_for
            );
            h.complete(&prompt)?
        }
        None => excerpt(&text, &a.things_to_look_for, Path::new(&a.file_name)),
    };
    Ok(Outcome::new(body, ActionKind::NonEdit))
}

/// The offline Understand File: the first 20 lines, then up to 40 further lines containing a word (≥ 3 letters) of
/// `things`, each with its line number.
pub fn excerpt(text: &str, things: &str, name: &Path) -> String {
    let words: Vec<String> = things
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.len() >= 3)
        .map(str::to_ascii_lowercase)
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!(
        "No helper LLM is configured; here is an excerpt of {} ({} lines).\nFirst lines:\n",
        name.display(),
        lines.len()
    );
    for (i, l) in lines.iter().enumerate().take(20) {
        out.push_str(&format!("{:>5}: {}\n", i + 1, clip(l)));
    }
    let matching: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .skip(20)
        .filter(|(_, l)| {
            let low = l.to_ascii_lowercase();
            words.iter().any(|w| low.contains(w.as_str()))
        })
        .take(40)
        .map(|(i, l)| (i, *l))
        .collect();
    if !matching.is_empty() {
        out.push_str("Lines mentioning what you look for:\n");
        for (i, l) in matching {
            out.push_str(&format!("{:>5}: {}\n", i + 1, clip(l)));
        }
    }
    out
}

fn clip(line: &str) -> String {
    if line.chars().count() > 300 { format!("{}…", line.chars().take(300).collect::<String>()) } else { line.into() }
}
