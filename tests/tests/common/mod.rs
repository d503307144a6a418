//! Helpers shared by the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used)] // each test crate uses a part of it; test code

use std::path::{Path, PathBuf};

/// Every `.gz` file below `root`.
pub(crate) fn gz_files(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            gz_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "gz") {
            out.push(p);
        }
    }
}
