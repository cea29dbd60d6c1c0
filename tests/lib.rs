//! Support for the cross-crate tests in `tests/tests/`: fixture paths and safetensors readers.
//! The fixtures live in `tests/fixtures/` (copied from the project's shared fixtures, with their
//! REFERENCE.md and LICENSE files) so that `cargo test` passes on a fresh clone.

use std::path::{Path, PathBuf};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Reads tensor `name` from a safetensors file: (shape, values as f64).
///
/// # Panics
/// If the file or tensor is missing or of an unsupported dtype (test fixtures only).
pub fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = t.data();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        safetensors::Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("{name}: unsupported dtype {other:?}"),
    };
    (t.shape().to_vec(), values)
}

/// Copies the files of directory `from` into a new directory `to` (not recursive).
///
/// # Panics
/// On I/O errors (tests only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
