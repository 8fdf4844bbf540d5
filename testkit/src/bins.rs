//! The one way of finding the workspace's binaries (see the crate docs,
//! "Finding the binaries"): the `target/<profile>/` directory of the
//! running executable, built there on demand for tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

/// The running executable's own directory (`target/<profile>/` for a
/// binary such as `msbench`, `target/<profile>/deps/` for a test).
fn exe_dir() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no directory", exe.display()))
}

/// The directory cargo puts the workspace's binaries in for the running
/// executable: its own directory, or the parent of it when that is `deps`
/// (where cargo puts test executables).
pub fn bin_dir() -> Result<PathBuf, String> {
    let dir = exe_dir()?;
    Ok(match dir.parent() {
        Some(up) if dir.file_name().is_some_and(|n| n == "deps") => up.to_path_buf(),
        _ => dir,
    })
}

/// For a program of the workspace (`msbench`): the binaries `names` next
/// to it, in the running executable's own directory, without building
/// anything. The error lists every missing one and says how to build them,
/// on one line.
pub fn locate<const N: usize>(names: [&str; N]) -> Result<[PathBuf; N], String> {
    let dir = exe_dir()?;
    let paths = names.map(|n| dir.join(n));
    let missing: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, p)| !p.is_file())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        Ok(paths)
    } else {
        Err(format!(
            "{} not found in {}: run `cargo build --release --workspace` first",
            missing.join(", "),
            dir.display()
        ))
    }
}

/// The cargo profile whose output directory is `dir` (`target/debug` is
/// the `test` profile's when a test runs).
fn profile_args(dir: &Path) -> Vec<String> {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => vec!["--profile".into(), "test".into()],
        Some("release") => vec!["--release".into()],
        Some(other) => vec!["--profile".into(), other.into()],
    }
}

/// For tests: binary `name` of workspace package `package`, in
/// [`bin_dir`]; built there once per test process (`cargo build -p
/// PACKAGE --bin NAME`, same profile) when it is missing. Panics, with
/// cargo's output, when it cannot be had.
pub fn bin(package: &str, name: &str) -> PathBuf {
    static TRIED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let dir = bin_dir().unwrap_or_else(|e| panic!("testkit: {e}"));
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    // One build at a time, and once per binary: parallel tests wait here.
    let mut tried = TRIED.lock().unwrap_or_else(PoisonError::into_inner);
    if path.is_file() || !tried.insert(name.to_string()) {
        assert!(
            path.is_file(),
            "testkit: no {name} binary in {}",
            dir.display()
        );
        return path;
    }
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--manifest-path",
            manifest,
            "-p",
            package,
            "--bin",
            name,
        ])
        .args(profile_args(&dir))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("testkit: cannot run {cargo:?} to build {name}: {e}"));
    assert!(
        out.status.success() && path.is_file(),
        "testkit: `cargo build -p {package} --bin {name}` did not give {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_executable_looks_in_the_profile_directory() {
        let dir = bin_dir().expect("bin dir");
        assert_ne!(dir.file_name().and_then(|n| n.to_str()), Some("deps"));
        assert!(dir.join("deps").is_dir(), "{}", dir.display());
    }

    #[test]
    fn missing_binaries_are_named_with_the_build_command() {
        let e = locate(["no-such-binary-a", "no-such-binary-b"]).expect_err("missing");
        assert!(
            e.contains("no-such-binary-a, no-such-binary-b not found in"),
            "{e}"
        );
        assert!(e.contains("cargo build --release --workspace"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn profiles_follow_the_directory() {
        assert_eq!(
            profile_args(Path::new("target/debug")),
            ["--profile", "test"]
        );
        assert_eq!(profile_args(Path::new("target/release")), ["--release"]);
        assert_eq!(
            profile_args(Path::new("target/bench")),
            ["--profile", "bench"]
        );
    }
}
