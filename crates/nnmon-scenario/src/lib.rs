//! nnmon's research harness, the pure part: scenario files, their schedule, drift
//! injections, and the verdict and summary of a run. No I/O and no clock: the runner
//! (`nnmon scenario run`, in the root package) starts the services, injects the faults,
//! measures, and hands what it measured to the functions here.
//!
//! # Layout
//! - [`schema`]: the TOML file ([`ScenarioFile`], parsed with serde, unknown keys refused)
//!   checked into a [`Scenario`]: times resolved, names known, errors naming the key
//!   ([`ScenarioError`]).
//! - [`plan`]: the open-loop schedule ([`Plan`]: when item `i` is due, which item is due at
//!   a time) and the [`Injector`] that applies drift injections to items, measured in the
//!   data set's standard deviations ([`DataStats`]).
//! - [`verdict`]: alarms scored against the injections ([`score_alarms`]: detection delay
//!   in items, false alarms), confirmed IDs against rows ([`check_delivery`]), and the
//!   hypothesis ([`check_hypothesis`]).
//! - [`load`]: the machine's load from `/proc`'s text — each service's CPU and runqueue
//!   wait ([`ServiceTimes`], [`CpuTime`]) and the load average ([`LoadAverage`]).
//! - [`summary`]: `summary.json` ([`Summary`]), `timeline.csv` ([`TimelineRow`]), and two
//!   summaries side by side ([`compare`]).
//!
//! Data flows file → [`Scenario::parse`] → [`Plan`] + [`Injector`] (in `features`) and
//! faults (in the runner) → measurements → [`score_alarms`], [`check_delivery`] →
//! [`check_hypothesis`] → [`Summary`].

pub mod load;
pub mod plan;
pub mod schema;
pub mod summary;
pub mod verdict;

pub use load::{
    CpuTime, LoadAverage, ProcessTimes, SchedStat, ServiceTimes, parse_loadavg, parse_schedstat,
};
pub use plan::{DataStats, Injector, Plan, Step};
pub use schema::{
    Change, Drift, Fault, FaultAction, Hypothesis, Scenario, ScenarioError, ScenarioFile, Service,
    Services,
};
pub use summary::{
    Comparison, FaultRecord, Latency, StepSummary, Summary, TimelineRow, compare, format_comparison,
};
pub use verdict::{
    Alarm, AlarmKind, AlarmScore, Delivery, InjectionOutcome, Observed, ScoredAlarm,
    check_delivery, check_hypothesis, score_alarms,
};
