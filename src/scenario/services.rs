//! The pipeline's services as child processes of the runner: the `nnmon` binary itself,
//! each with its stderr in `<log-dir>/<service>-<n>.stderr` (n counts its starts), and
//! signalled, restarted and stopped as a fault or the end of the run says. Each start's
//! CPU and runqueue wait are sampled while it lives (at every [`sample`](Services::sample)
//! and just before it is signalled) and added to its service's once it is gone.

use super::load::sample_process;
use anyhow::{Context, Result, bail};
use nnmon_scenario::{CpuTime, ServiceTimes};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// One running (or exited) service.
struct Running {
    child: Child,
    /// The stderr file of this start.
    stderr: PathBuf,
}

/// What every service of the run shares, and the services themselves.
pub struct Services {
    exe: PathBuf,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    /// Each service's arguments, used again on restart.
    args: HashMap<&'static str, Vec<String>>,
    running: HashMap<&'static str, Running>,
    starts: HashMap<&'static str, u32>,
    times: ServiceTimes,
}

impl Services {
    /// Services of the `nnmon` binary `exe`, with `env` set, writing into `log_dir`.
    pub fn new(exe: PathBuf, env: Vec<(String, String)>, log_dir: &Path) -> Self {
        Self {
            exe,
            env,
            log_dir: log_dir.to_owned(),
            args: HashMap::new(),
            running: HashMap::new(),
            starts: HashMap::new(),
            times: ServiceTimes::default(),
        }
    }

    /// Samples `name`'s threads, if it has not been reaped.
    fn sample_one(&mut self, name: &str) {
        if let Some(pid) = self.running.get(name).and_then(|r| r.child.id()) {
            sample_process(pid, self.times.process(name));
        }
    }

    /// Samples every running service's threads.
    pub fn sample(&mut self) {
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in names {
            self.sample_one(name);
        }
    }

    /// `name`'s process is gone: forgotten, its time added to the service's.
    fn forget(&mut self, name: &str) -> Option<Running> {
        self.times.ended(name);
        self.running.remove(name)
    }

    /// Each service's CPU and runqueue wait over all its starts, as sampled so far.
    pub fn cpu(&self) -> BTreeMap<String, CpuTime> {
        self.times.by_service()
    }

    /// Starts `nnmon <args>` as `name`; a later [`restart`](Self::restart) uses the same
    /// arguments. Returns the stderr file of this start.
    pub fn start(&mut self, name: &'static str, args: Vec<String>) -> Result<PathBuf> {
        self.args.insert(name, args);
        self.restart(name)
    }

    /// Starts `name` again with its last arguments.
    pub fn restart(&mut self, name: &'static str) -> Result<PathBuf> {
        if self.running.contains_key(name) {
            bail!("{name} is still running");
        }
        let args = self.args.get(name).context("a service never started")?;
        let start = self.starts.entry(name).or_default();
        *start += 1;
        let stderr_path = self.log_dir.join(format!("{name}-{start}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            // A group of its own: a Ctrl-C in the terminal reaches only the runner, which
            // then stops the services in order.
            .process_group(0);
        let runner = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // A runner that dies, even SIGKILLed, takes its services with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The runner died before prctl took effect: no signal will come.
                if libc::getppid() != runner as libc::pid_t {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let runners = self.env.iter().any(|(set, _)| *set == key);
            // A flag twin the user may have set (`NNMON_DELAY`, `NNMON_SHARDS`...) is
            // cleared: a service runs with the scenario's settings and the runner's
            // (the broker's TLS files among them) and nothing else.
            if key.starts_with("NNMON_") && !runners {
                command.env_remove(&*key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        self.running.insert(
            name,
            Running {
                child,
                stderr: stderr_path.clone(),
            },
        );
        Ok(stderr_path)
    }

    /// Sends SIGKILL (`kill`) or SIGTERM to `name`; it stays known until it has exited.
    pub fn signal(&mut self, name: &str, kill: bool) -> Result<()> {
        // Its last sample: what it ran after the signal is not seen.
        self.sample_one(name);
        let running = self
            .running
            .get_mut(name)
            .with_context(|| format!("{name} is not running"))?;
        if kill {
            running.child.start_kill().context("SIGKILL")?;
            return Ok(());
        }
        let pid = running.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill(1)")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(())
    }

    /// Waits up to `timeout` for `name` to exit and forgets it.
    pub async fn reap(&mut self, name: &str, timeout: Duration) -> Result<ExitStatus> {
        self.sample_one(name);
        let running = self
            .running
            .get_mut(name)
            .with_context(|| format!("{name} is not running"))?;
        let status = tokio::time::timeout(timeout, running.child.wait())
            .await
            .with_context(|| format!("{name} did not exit within {timeout:?}"))??;
        self.forget(name);
        Ok(status)
    }

    /// `name`'s exit status if it has exited (it is then forgotten), `None` if it runs.
    pub fn exited(&mut self, name: &str) -> Result<Option<ExitStatus>> {
        let Some(running) = self.running.get_mut(name) else {
            return Ok(None);
        };
        let status = running.child.try_wait()?;
        if status.is_some() {
            self.forget(name);
        }
        Ok(status)
    }

    /// Whether `name` runs (or has exited without being reaped).
    pub fn is_known(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// `name`'s last stderr lines, for error messages.
    pub fn tail(&self, name: &str) -> String {
        let Some(running) = self.running.get(name) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&running.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(10).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERMs every running service and waits for each, SIGKILLing what does not exit
    /// within `timeout`. Returns the services that did not exit 0.
    pub async fn stop_all(&mut self, timeout: Duration) -> Vec<String> {
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in &names {
            let _ = self.signal(name, false);
        }
        let mut failed = Vec::new();
        for name in names {
            match self.reap(name, timeout).await {
                Ok(status) if status.success() => {}
                Ok(status) => failed.push(format!("{name} exited with {status}")),
                Err(error) => {
                    failed.push(format!("{error:#}"));
                    if let Some(mut running) = self.forget(name) {
                        let _ = running.child.kill().await;
                    }
                }
            }
        }
        failed
    }
}
