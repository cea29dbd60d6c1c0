//! Whole-file CSV tables: read for grading, written by the task generators.

use std::path::{Path, PathBuf};

/// A CSV file held in memory: one header row and string cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names, in file order.
    pub header: Vec<String>,
    /// Data rows; every row has `header.len()` cells.
    pub rows: Vec<Vec<String>>,
}

/// Reading or writing a CSV file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not well-formed CSV (e.g. a row with the wrong number of cells).
    #[error("{path}: malformed CSV at line {line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number, 0 when unknown.
        line: u64,
        /// What the parser reported.
        message: String,
    },
    /// The file has no header row.
    #[error("{path}: empty file (expected a header row)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Table {
    /// A table with the given header and no rows.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Append one row; it must have one cell per column.
    ///
    /// # Panics
    /// When the row length differs from the header's: generator code builds rows, so this is a programming error.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        let row: Vec<String> = row.into_iter().map(Into::into).collect();
        assert_eq!(row.len(), self.header.len(), "row length must match header {:?}", self.header);
        self.rows.push(row);
    }

    /// The index of a column by exact name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Read a whole CSV file.
    pub fn read(path: &Path) -> Result<Table, CsvError> {
        let file = std::fs::File::open(path).map_err(|source| CsvError::Io { path: path.to_path_buf(), source })?;
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(false).from_reader(file);
        let mut records = reader.records();
        let malformed = |e: csv::Error| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            match e.into_kind() {
                csv::ErrorKind::Io(source) => CsvError::Io { path: path.to_path_buf(), source },
                kind => CsvError::Malformed { path: path.to_path_buf(), line, message: format!("{kind:?}") },
            }
        };
        let header = match records.next() {
            None => return Err(CsvError::Empty { path: path.to_path_buf() }),
            Some(r) => r.map_err(malformed)?.iter().map(|s| s.trim_start_matches('\u{feff}').to_string()).collect(),
        };
        let mut rows = Vec::new();
        for r in records {
            let r = r.map_err(malformed)?;
            rows.push(r.iter().map(str::to_string).collect());
        }
        Ok(Table { header, rows })
    }

    /// Render as CSV text (quoted where needed, `\n` line ends).
    pub fn to_csv(&self) -> String {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        // Writing into a Vec cannot fail.
        w.write_record(&self.header).expect("in-memory CSV write");
        for r in &self.rows {
            w.write_record(r).expect("in-memory CSV write");
        }
        String::from_utf8(w.into_inner().expect("in-memory CSV flush")).expect("cells are UTF-8")
    }

    /// Write as a CSV file, creating parent folders.
    pub fn write(&self, path: &Path) -> Result<(), CsvError> {
        let io = |source| CsvError::Io { path: path.to_path_buf(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, self.to_csv()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_quoted_cells() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        let mut t = Table::new(["id", "text"]);
        t.push(["1", "hello, \"world\""]);
        t.push(["2", "line\nbreak"]);
        t.write(&p).unwrap();
        assert_eq!(Table::read(&p).unwrap(), t);
    }

    #[test]
    fn ragged_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "id,a\n1,2\n3\n").unwrap();
        let e = Table::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        std::fs::write(&p, "").unwrap();
        assert!(matches!(Table::read(&p), Err(CsvError::Empty { .. })));
    }
}
