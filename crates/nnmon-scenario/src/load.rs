//! The machine's load during a run, from the text of Linux's `/proc` files (the runner
//! reads them; this module only parses and adds up): each service's time on a CPU and
//! time waiting runnable for one (`/proc/<pid>/task/<tid>/schedstat`), and the 1-minute
//! load average (`/proc/loadavg`). A service that waited for a CPU longer than it ran
//! measured the machine more than itself: its latency tail is mostly queueing for a core.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One thread's scheduler counters: nanoseconds on a CPU and nanoseconds waiting on a
/// runqueue, both since the thread started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub cpu_ns: u64,
    pub wait_ns: u64,
}

/// Parses a `schedstat` file: `<ns on cpu> <ns waiting on a runqueue> <timeslices>`.
pub fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut fields = text.split_whitespace();
    let cpu_ns = fields.next()?.parse().ok()?;
    let wait_ns = fields.next()?.parse().ok()?;
    Some(SchedStat { cpu_ns, wait_ns })
}

/// Parses `/proc/loadavg` (`0.52 0.58 0.59 1/389 12345`): the 1-minute load average.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|load: &f64| load.is_finite() && *load >= 0.0)
}

/// A service's CPU and runqueue wait in seconds, summed over its threads and its starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTime {
    pub cpu_s: f64,
    pub wait_s: f64,
}

impl CpuTime {
    /// Seconds waiting for a CPU per second on one; `None` without CPU time.
    pub fn wait_per_cpu(&self) -> Option<f64> {
        (self.cpu_s > 0.0).then(|| self.wait_s / self.cpu_s)
    }

    /// The services' times added up.
    pub fn total<'a>(times: impl IntoIterator<Item = &'a CpuTime>) -> Self {
        times.into_iter().fold(Self::default(), |sum, t| Self {
            cpu_s: sum.cpu_s + t.cpu_s,
            wait_s: sum.wait_s + t.wait_s,
        })
    }

    /// Whether the services waited for a CPU longer than they ran: then latency figures
    /// say more about the machine's load than about the services.
    pub fn contended(&self) -> bool {
        self.wait_s > self.cpu_s
    }
}

/// The 1-minute load average when the run started and when it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadAverage {
    pub start: f64,
    pub end: f64,
}

/// One process's threads as last sampled. The counters only grow, so a thread's latest
/// sample holds all of it; a thread gone between two samples keeps its last one (what it
/// did after that is not seen: the runner samples often, and just before a stop).
#[derive(Clone, Debug, Default)]
pub struct ProcessTimes {
    threads: HashMap<u32, SchedStat>,
}

impl ProcessTimes {
    /// Records thread `tid`'s counters.
    pub fn record(&mut self, tid: u32, stat: SchedStat) {
        let last = self.threads.entry(tid).or_default();
        last.cpu_ns = last.cpu_ns.max(stat.cpu_ns);
        last.wait_ns = last.wait_ns.max(stat.wait_ns);
    }

    /// All threads' time.
    pub fn total(&self) -> CpuTime {
        let (cpu, wait) = self.threads.values().fold((0u64, 0u64), |(cpu, wait), s| {
            (cpu.saturating_add(s.cpu_ns), wait.saturating_add(s.wait_ns))
        });
        CpuTime {
            cpu_s: cpu as f64 / 1e9,
            wait_s: wait as f64 / 1e9,
        }
    }
}

/// Every service's time: the starts that ended plus the one running.
#[derive(Clone, Debug, Default)]
pub struct ServiceTimes {
    ended: BTreeMap<String, CpuTime>,
    running: HashMap<String, ProcessTimes>,
}

impl ServiceTimes {
    /// The running process of `service` (a new one after [`ended`](Self::ended)).
    pub fn process(&mut self, service: &str) -> &mut ProcessTimes {
        self.running.entry(service.to_owned()).or_default()
    }

    /// `service`'s process is gone: its time is added to the service's.
    pub fn ended(&mut self, service: &str) {
        if let Some(process) = self.running.remove(service) {
            let time = process.total();
            let sum = self.ended.entry(service.to_owned()).or_default();
            *sum = CpuTime::total([&*sum, &time]);
        }
    }

    /// Each service's time over all its starts so far, by name.
    pub fn by_service(&self) -> BTreeMap<String, CpuTime> {
        let mut all = self.ended.clone();
        for (service, process) in &self.running {
            let sum = all.entry(service.clone()).or_default();
            *sum = CpuTime::total([&*sum, &process.total()]);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_cpu_and_runqueue_nanoseconds() {
        assert_eq!(
            parse_schedstat("1234567890 987654321 4242\n"),
            Some(SchedStat {
                cpu_ns: 1_234_567_890,
                wait_ns: 987_654_321
            })
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("a b c"), None);
    }

    #[test]
    fn loadavg_gives_the_one_minute_figure() {
        assert_eq!(parse_loadavg("10.52 7.58 3.59 5/389 12345\n"), Some(10.52));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("x 1 2"), None);
        assert_eq!(parse_loadavg("-1 1 2"), None);
    }

    #[test]
    fn threads_keep_their_latest_sample_and_restarts_add_up() {
        let mut times = ServiceTimes::default();
        let stat = |cpu_ns, wait_ns| SchedStat { cpu_ns, wait_ns };
        times
            .process("model")
            .record(1, stat(1_000_000_000, 500_000_000));
        times.process("model").record(2, stat(250_000_000, 0));
        // A later sample of thread 1; thread 2 has exited and keeps its last one.
        times
            .process("model")
            .record(1, stat(2_000_000_000, 3_000_000_000));
        times.ended("model");
        // The restarted process's thread 1 is another thread.
        times
            .process("model")
            .record(1, stat(500_000_000, 500_000_000));
        times.process("metric").record(7, stat(1_000_000_000, 0));
        let all = times.by_service();
        assert_eq!(
            all["model"],
            CpuTime {
                cpu_s: 2.75,
                wait_s: 3.5
            }
        );
        assert_eq!(all["metric"].wait_per_cpu(), Some(0.0));
        let total = CpuTime::total(all.values());
        assert_eq!(total.cpu_s, 3.75);
        assert!(!total.contended());
        assert!(all["model"].contended());
        assert_eq!(CpuTime::default().wait_per_cpu(), None);
    }
}
