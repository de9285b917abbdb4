//! Records what built this binary, for a scenario run's `env.json`: the git revision of
//! the source tree, whether its code had uncommitted changes, and the rustc that compiled
//! it. Asked at build time, so that `env.json` describes the binary that ran, not whatever
//! checkout the run was started from. Outside a git checkout (a Docker build) the
//! revision is left unset and `env.json` says so.

use std::process::Command;

/// The trimmed output of `program args`, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The code the binary is built from: a change anywhere else (the README) does not make
/// the binary dirty.
const CODE: [&str; 5] = ["src", "crates", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    // Any change to the code reruns this script (so the dirty flag follows edits), and
    // so does a commit or a checkout (HEAD, the branch's ref and the index move).
    for path in CODE {
        println!("cargo:rerun-if-changed={path}");
    }
    for git_path in ["HEAD", "index"] {
        if let Some(path) = output("git", &["rev-parse", "--git-path", git_path]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = output("git", &["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(revision) = output("git", &["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=NNMON_BUILD_GIT_REVISION={revision}");
        let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
        status.extend(CODE);
        if let Some(changes) = output("git", &status) {
            println!(
                "cargo:rustc-env=NNMON_BUILD_GIT_DIRTY={}",
                !changes.is_empty()
            );
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    if let Some(version) = output(&rustc, &["-V"]) {
        println!("cargo:rustc-env=NNMON_BUILD_RUSTC={version}");
    }
}
