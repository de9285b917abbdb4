//! Records what built this binary, for a scenario run's `env.json`: the git revision of
//! the source tree, whether its code had uncommitted changes, and the rustc that compiled
//! it. Asked at build time, so that `env.json` describes the binary that ran, not whatever
//! checkout the run was started from. Outside a git checkout (a Docker build) the
//! revision comes from `NNMON_BUILD_GIT_REVISION` in the build's environment if set (the
//! Dockerfile's build argument), else it is left unset and `env.json` says so.

use std::path::Path;
use std::process::Command;

/// The trimmed output of `git args`, if it ran and succeeded. `--no-optional-locks` keeps
/// `git status` from rewriting the index (which would move what other tools watch).
fn git(args: &[&str]) -> Option<String> {
    output("git", &[&["--no-optional-locks"], args].concat())
}

/// The trimmed output of `program args`, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Asks cargo to rerun this script when `path` changes, only if it exists: a missing path
/// makes cargo rerun the script (and rebuild the package) on every build.
fn watch_if_present(path: &str) {
    if Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// The code the binary is built from: a change anywhere else (the README) does not make
/// the binary dirty.
const CODE: [&str; 5] = ["src", "crates", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    // Any change to the code reruns this script (so the dirty flag follows edits), and
    // so does a commit or a checkout (HEAD and the branch's ref move; a packed ref lives
    // in packed-refs). Not the index: `git status` and `git add` rewrite it all the time,
    // and the dirty flag only changes with the code or HEAD, both watched already.
    for path in CODE {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=NNMON_BUILD_GIT_REVISION");
    for git_path in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", git_path]) {
            watch_if_present(&path);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch_if_present(&path);
    }
    if let Some(revision) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=NNMON_BUILD_GIT_REVISION={revision}");
        // Untracked files under the code count too (a new module, an include_str! file);
        // ignored ones (target/) do not.
        let mut status = vec!["status", "--porcelain", "--untracked-files=normal", "--"];
        status.extend(CODE);
        if let Some(changes) = git(&status) {
            println!(
                "cargo:rustc-env=NNMON_BUILD_GIT_DIRTY={}",
                !changes.is_empty()
            );
        }
    } else if let Ok(revision) = std::env::var("NNMON_BUILD_GIT_REVISION")
        && !revision.is_empty()
    {
        println!("cargo:rustc-env=NNMON_BUILD_GIT_REVISION={revision}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    if let Some(version) = output(&rustc, &["-V"]) {
        println!("cargo:rustc-env=NNMON_BUILD_RUSTC={version}");
    }
}
