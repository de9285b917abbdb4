//! `env.json`: what a reader needs to trust or rerun a result — the code's revision, the
//! toolchain, the broker, the machine, and the scenario file's hash.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct Environment {
    /// `git rev-parse HEAD` of the checkout the scenario file is in, if it is in one.
    pub git_revision: Option<String>,
    /// Whether that checkout had uncommitted changes (`git status --porcelain`).
    pub git_dirty: Option<bool>,
    pub nnmon_version: &'static str,
    /// `rustc -V` on this machine, if it is installed.
    pub rustc: Option<String>,
    /// The broker's version as `rabbitmqctl version` says, if it can be asked.
    pub broker_version: Option<String>,
    /// `PRETTY_NAME` of /etc/os-release and the kernel release.
    pub os: String,
    pub cpu_model: Option<String>,
    pub cpu_cores: usize,
    pub scenario_file: String,
    pub scenario_sha256: String,
    /// When the run started (UTC).
    pub started_utc: String,
}

/// The first line a command prints, if it ran and succeeded.
fn first_line(program: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn os() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let name = release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or(std::env::consts::OS, |n| n.trim_matches('"'))
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{name}, kernel {}", kernel.trim())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Describes this machine and checkout for a run of the scenario at `scenario_file`
/// (whose bytes are `scenario_bytes`); `rabbitmqctl` is the command that reaches the
/// broker.
pub fn describe(
    scenario_file: &Path,
    scenario_bytes: &[u8],
    rabbitmqctl: &[String],
    started_utc: String,
) -> Environment {
    let dir = scenario_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let git_revision = first_line("git", &["rev-parse", "HEAD"], Some(dir));
    let git_dirty = git_revision.as_ref().and_then(|_| {
        let output = Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(dir)
            .output()
            .ok()?;
        output.status.success().then_some(!output.stdout.is_empty())
    });
    let broker_version = rabbitmqctl.split_first().and_then(|(program, rest)| {
        let mut args: Vec<&str> = rest.iter().map(String::as_str).collect();
        args.push("version");
        first_line(program, &args, None)
    });
    Environment {
        git_revision,
        git_dirty,
        nnmon_version: env!("CARGO_PKG_VERSION"),
        rustc: first_line("rustc", &["-V"], None),
        broker_version,
        os: os(),
        cpu_model: cpu_model(),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        scenario_file: scenario_file.display().to_string(),
        scenario_sha256: sha256(scenario_bytes),
        started_utc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_hex_of_the_digest() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
