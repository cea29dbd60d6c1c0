//! The episode folder and the path rules every action obeys.
//!
//! ```text
//! DIR/
//!   work/           the agent's folder: every path argument is resolved here
//!   episode.json    task, configuration and episode state (m_t, step, pending edit)
//!   trace.jsonl     one line per step
//!   backups/        previous versions of edited files, for Undo Edit Script
//! ```
//! A path argument is joined to `work/`, resolved with symlinks (`canonicalize`) and accepted only if the result
//! `Path::starts_with` the canonical `work/` — never a string-prefix check. A file that does not exist yet (a write
//! target) is resolved through its deepest existing ancestor, and its remaining components must be plain names.

use std::path::{Component, Path, PathBuf};

/// A path argument was refused or could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path resolves (possibly through a symlink) outside `work/`.
    #[error("`{0}` is outside the work folder; use a path relative to the work folder")]
    Outside(String),
    /// The path does not exist.
    #[error("`{0}` does not exist; use List Files to see what is there")]
    NotFound(String),
    /// The path is a directory where a file was expected, or the reverse.
    #[error("`{path}` is not a {expected}")]
    WrongType {
        /// The argument.
        path: String,
        /// "file" or "directory".
        expected: &'static str,
    },
    /// The file is protected data.
    #[error("`{0}` is read-only task data and cannot be overwritten; write to a new file instead")]
    ReadOnly(String),
    /// The argument is empty.
    #[error("empty path")]
    Empty,
    /// A file-system call failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The argument.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The episode folder and the canonical `work/` inside it.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    work: PathBuf,
    read_only: Vec<glob::Pattern>,
}

impl Workspace {
    /// Open an episode folder whose `work/` exists; `read_only` are glob patterns relative to `work/`.
    pub fn open(root: &Path, read_only: &[String]) -> Result<Workspace, PathError> {
        let io = |source| PathError::Io { path: root.display().to_string(), source };
        let root = std::fs::canonicalize(root).map_err(io)?;
        let work = std::fs::canonicalize(root.join("work")).map_err(io)?;
        let read_only = read_only.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
        Ok(Workspace { root, work, read_only })
    }

    /// The episode folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The agent's folder.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The path relative to `work/`, with `/` separators (for messages, traces and read-only patterns).
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.work).unwrap_or(path).to_string_lossy().into_owned()
    }

    /// Resolve an existing path inside `work/`.
    pub fn existing(&self, arg: &str) -> Result<PathBuf, PathError> {
        let arg_t = arg.trim();
        if arg_t.is_empty() {
            return Err(PathError::Empty);
        }
        let joined = self.work.join(arg_t);
        match std::fs::canonicalize(&joined) {
            Ok(p) if p.starts_with(&self.work) => Ok(p),
            Ok(_) => Err(PathError::Outside(arg_t.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink, or a missing file; refuse links that point outside either way.
                if let Ok(target) = std::fs::read_link(&joined) {
                    let abs = joined.parent().unwrap_or(&self.work).join(target);
                    if !normalize(&abs).starts_with(&self.work) {
                        return Err(PathError::Outside(arg_t.into()));
                    }
                }
                Err(PathError::NotFound(arg_t.into()))
            }
            Err(source) => Err(PathError::Io { path: arg_t.into(), source }),
        }
    }

    /// Resolve an existing regular file inside `work/`.
    pub fn existing_file(&self, arg: &str) -> Result<PathBuf, PathError> {
        let p = self.existing(arg)?;
        if p.is_file() { Ok(p) } else { Err(PathError::WrongType { path: arg.trim().into(), expected: "file" }) }
    }

    /// Resolve a file to be written inside `work/` (it may not exist yet; missing parent folders are allowed).
    /// Refuses read-only data and directories.
    pub fn writable(&self, arg: &str) -> Result<PathBuf, PathError> {
        let arg_t = arg.trim();
        if arg_t.is_empty() {
            return Err(PathError::Empty);
        }
        let joined = self.work.join(arg_t);
        let resolved = if std::fs::symlink_metadata(&joined).is_ok() {
            self.existing(arg_t)?
        } else {
            // Deepest existing ancestor, canonicalized; the rest must be plain names.
            let mut base = joined.clone();
            let mut rest = Vec::new();
            while std::fs::symlink_metadata(&base).is_err() {
                match (base.file_name(), base.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_owned());
                        base = parent.to_path_buf();
                    }
                    _ => return Err(PathError::Outside(arg_t.into())),
                }
            }
            if Path::new(arg_t).components().any(|c| matches!(c, Component::ParentDir)) && !rest.is_empty() {
                // `..` before a missing component: resolve conservatively on the normalized path.
                let norm = normalize(&joined);
                if !norm.starts_with(&self.work) {
                    return Err(PathError::Outside(arg_t.into()));
                }
            }
            let base = std::fs::canonicalize(&base).map_err(|source| PathError::Io { path: arg_t.into(), source })?;
            let mut p = base;
            for name in rest.iter().rev() {
                p.push(name);
            }
            p
        };
        if !resolved.starts_with(&self.work) {
            return Err(PathError::Outside(arg_t.into()));
        }
        if resolved.is_dir() {
            return Err(PathError::WrongType { path: arg_t.into(), expected: "file" });
        }
        if self.is_read_only(&resolved) {
            return Err(PathError::ReadOnly(arg_t.into()));
        }
        Ok(resolved)
    }

    /// Whether a resolved path matches a read-only pattern.
    pub fn is_read_only(&self, resolved: &Path) -> bool {
        let rel = self.relative(resolved);
        self.read_only.iter().any(|p| p.matches(&rel))
    }
}

/// Lexically remove `.` and `..` (used only for paths that do not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        std::fs::write(work.join("train.py"), "print(1)").unwrap();
        std::fs::write(work.join("train.csv"), "id,y\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "answers").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), work.join("link_out")).unwrap();
        std::os::unix::fs::symlink(work.join("train.py"), work.join("link_in")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/zzz", work.join("dangling_out")).unwrap();
        let ws = Workspace::open(dir.path(), &["train.csv".to_string()]).unwrap();
        (dir, ws)
    }

    #[test]
    fn inside_paths_resolve() {
        let (_d, ws) = setup();
        assert!(ws.existing_file("train.py").unwrap().ends_with("work/train.py"));
        assert!(ws.existing_file("./sub/../train.py").is_ok());
        assert!(ws.existing_file("link_in").unwrap().ends_with("work/train.py"));
        assert!(ws.existing(".").unwrap() == ws.work());
        assert!(ws.writable("new/dir/model.py").unwrap().ends_with("work/new/dir/model.py"));
    }

    #[test]
    fn escapes_are_refused() {
        let (d, ws) = setup();
        for bad in ["../secret.txt", "link_out", "sub/../../secret.txt", "/etc/passwd", "dangling_out"] {
            assert!(matches!(ws.existing(bad), Err(PathError::Outside(_))), "{bad}: {:?}", ws.existing(bad));
        }
        let abs = d.path().join("secret.txt").display().to_string();
        assert!(matches!(ws.existing(&abs), Err(PathError::Outside(_))));
        for bad in ["../x.py", "link_out", "sub/../../y.py", "/tmp/z.py", "missing/../../q.py"] {
            assert!(matches!(ws.writable(bad), Err(PathError::Outside(_))), "{bad}: {:?}", ws.writable(bad));
        }
    }

    #[test]
    fn read_only_missing_and_type_errors() {
        let (_d, ws) = setup();
        assert!(matches!(ws.writable("train.csv"), Err(PathError::ReadOnly(_))));
        assert!(matches!(ws.writable("sub"), Err(PathError::WrongType { .. })));
        assert!(matches!(ws.existing_file("sub"), Err(PathError::WrongType { .. })));
        assert!(matches!(ws.existing("nope.py"), Err(PathError::NotFound(_))));
        assert!(matches!(ws.existing("  "), Err(PathError::Empty)));
        assert!(ws.writable("out.csv").is_ok(), "only the listed data is protected");
    }
}
