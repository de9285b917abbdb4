//! `env.json`: what a reader needs to trust or rerun a result — the code's revision, the
//! toolchain, the broker, the machine, and the hashes of the scenario file and of the
//! model files it names.

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Environment {
    /// `git rev-parse HEAD` of the tree this binary was built from (recorded by build.rs;
    /// `None` for a build outside a git checkout).
    pub git_revision: Option<String>,
    /// Whether that tree's code had uncommitted changes when it was built.
    pub git_dirty: Option<bool>,
    pub nnmon_version: &'static str,
    /// `rustc -V` of the compiler that built this binary.
    pub rustc: Option<String>,
    /// The broker's version from its AMQP greeting (server properties), if it answered.
    pub broker_version: Option<String>,
    /// `PRETTY_NAME` of /etc/os-release and the kernel release.
    pub os: String,
    pub cpu_model: Option<String>,
    pub cpu_cores: usize,
    pub scenario_file: String,
    pub scenario_sha256: String,
    /// The model files the scenario swaps to, each copied into the run's folder.
    pub models: Vec<ModelFile>,
    /// When the run started (UTC).
    pub started_utc: String,
}

/// A model file a scenario names, as it was when the run started.
#[derive(Debug, Serialize)]
pub struct ModelFile {
    /// As the scenario file names it.
    pub path: String,
    pub sha256: String,
    /// Its copy, relative to the run's folder.
    pub copy: String,
}

/// Hashes `path` and copies it into `out/models/`, so the run can be redone with exactly
/// the coefficients it used. `named` is the path as the scenario file gives it.
pub fn keep_model(path: &Path, named: &Path, out: &Path) -> Result<ModelFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let folder = out.join("models");
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let name = path.file_name().context("a model file has a name")?;
    let copy = folder.join(name);
    std::fs::write(&copy, &bytes).with_context(|| format!("writing {}", copy.display()))?;
    Ok(ModelFile {
        path: named.display().to_string(),
        sha256: sha256(&bytes),
        copy: Path::new("models").join(name).display().to_string(),
    })
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

/// Describes this binary and machine for a run of the scenario at `scenario_file` (whose
/// bytes are `scenario_bytes`) against a broker of `broker_version`, with `models`.
pub fn describe(
    scenario_file: &Path,
    scenario_bytes: &[u8],
    broker_version: Option<String>,
    models: Vec<ModelFile>,
    started_utc: String,
) -> Environment {
    Environment {
        git_revision: option_env!("NNMON_BUILD_GIT_REVISION").map(str::to_owned),
        git_dirty: option_env!("NNMON_BUILD_GIT_DIRTY").map(|dirty| dirty == "true"),
        nnmon_version: env!("CARGO_PKG_VERSION"),
        rustc: option_env!("NNMON_BUILD_RUSTC").map(str::to_owned),
        broker_version,
        os: os(),
        cpu_model: cpu_model(),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        scenario_file: scenario_file.display().to_string(),
        scenario_sha256: sha256(scenario_bytes),
        models,
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
