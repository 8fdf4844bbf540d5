//! Purity check (DESIGN.md section 3): the sans-IO cores never read a clock,
//! never use a thread RNG or std's randomly seeded hash maps, and never touch
//! sockets, threads or async runtimes. Only `src/runtime/` (and the daemon
//! crates and binaries, which are outside `src/` cores) may.
//!
//! clippy's `disallowed-methods` (clippy.toml) catches the clock and RNG calls
//! at the type level; this test also catches the imports and types that clippy
//! cannot ban by method path.

use std::fs;
use std::path::{Path, PathBuf};

/// Paths under `src/` allowed to do I/O.
const IMPURE_ALLOWED: &[&str] = &["src/runtime"];

/// Text that must not appear in a core (outside comments).
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::rng(",
    "from_entropy",
    "from_os_rng",
    "OsRng",
    "std::thread",
    "thread::sleep",
    "tokio::",
    "actix",
    "UdpSocket",
    "TcpStream",
    "std::net::UdpSocket",
    "HashMap",
    "HashSet",
    "now_v7",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn cores_are_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 5, "expected to find the core sources");
    let mut violations = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        if IMPURE_ALLOWED.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        let text = fs::read_to_string(f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in FORBIDDEN {
                if code.contains(bad) {
                    violations.push(format!(
                        "{rel}:{}: `{bad}` in a sans-IO core: {}",
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "sans-IO purity violations (only src/runtime may do I/O or read clocks):\n{}",
        violations.join("\n")
    );
}
