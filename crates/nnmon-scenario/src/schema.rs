//! The scenario file: TOML as written ([`ScenarioFile`]), checked into a [`Scenario`] whose
//! every time is resolved and every name known. Errors name the key at fault.

use crate::plan::{Plan, Step};
use nnmon_stats::DIABETES_FEATURE_NAMES;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not TOML, an unknown key, a missing one or a value of the wrong type (the TOML
    /// parser's message names the key and the line).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value that parses but cannot be run.
    #[error("`{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A scenario file as written. See the README's "Scenarios" section, key by key.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub seed: u64,
    pub load: LoadFile,
    #[serde(default)]
    pub services: Services,
    #[serde(default)]
    pub inject: Vec<InjectFile>,
    #[serde(default)]
    pub fault: Vec<FaultFile>,
    #[serde(default)]
    pub hypothesis: Hypothesis,
}

/// `[load]`: steps of rate × seconds, or a count at one rate.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadFile {
    #[serde(default)]
    pub steps: Vec<StepFile>,
    pub count: Option<u64>,
    pub rate: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    pub rate: f64,
    pub seconds: f64,
    /// This step's p99 latency, in ms, at most this (the target is per load).
    pub p99_latency_ms: Option<f64>,
}

/// `[services]`: settings handed to the services; absent ones keep the services' defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// metric's `--join-ttl`, seconds.
    pub join_ttl: Option<f64>,
    /// Every service's `--status-interval`, seconds (the runner's default: 0.5).
    pub status_interval: Option<f64>,
    /// `--prefetch` of features, model and metric.
    pub prefetch: Option<u16>,
    /// model's `--drift-window`.
    pub drift_window: Option<usize>,
    /// metric's `--window`.
    pub window: Option<u32>,
}

/// One `[[inject]]` table as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InjectFile {
    pub item: Option<u64>,
    pub seconds: Option<f64>,
    pub kind: DriftKind,
    pub feature: Option<String>,
    pub sd: Option<f64>,
    pub factor: Option<f64>,
    pub coefficients: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    Shift,
    Scale,
    Label,
    Model,
}

/// One `[[fault]]` table as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub seconds: f64,
    pub kind: FaultKind,
    pub service: Option<Service>,
    pub down: Option<f64>,
    pub count: Option<u64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Sigkill,
    Sigterm,
    BrokerRestart,
    Partition,
    Poison,
}

/// A service a fault can stop. `features` cannot: it holds the plan's schedule.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Model,
    Metric,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Model => "model",
            Service::Metric => "metric",
        }
    }
}

/// `[hypothesis]`: what must hold for the run to pass.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hypothesis {
    /// Every item features had confirmed is exactly one row of the metric log.
    #[serde(default = "yes")]
    pub exactly_once: bool,
    /// Each injection is followed by an alarm it explains within this many items.
    pub alarm_within_items: Option<u64>,
    /// Alarms no injection explains (before the first one, or of another feature).
    #[serde(default)]
    pub max_false_alarms: u64,
    /// Exactly this many messages end in `dead_letter`.
    pub dead_lettered: Option<u64>,
    /// The whole run's p99 latency (scheduled send time to row), in ms, at most this.
    pub p99_latency_ms: Option<f64>,
    /// Each load step's own p99 target, from `load.steps[i].p99_latency_ms` (one entry
    /// per step, `None` where the step sets none).
    #[serde(skip)]
    pub step_p99_latency_ms: Vec<Option<f64>>,
}

fn yes() -> bool {
    true
}

impl Default for Hypothesis {
    fn default() -> Self {
        Self {
            exactly_once: true,
            alarm_within_items: None,
            max_false_alarms: 0,
            dead_lettered: None,
            p99_latency_ms: None,
            step_p99_latency_ms: Vec::new(),
        }
    }
}

/// A drift injected from `item` (0-based: that item and every later one) on.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    pub item: u64,
    pub change: Change,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Feature `feature` moved by `sd` of its standard deviations.
    Shift { feature: usize, sd: f64 },
    /// Feature `feature`'s spread around its mean multiplied by `factor`.
    Scale { feature: usize, factor: f64 },
    /// The true value moved by `sd` of its standard deviations.
    Label { sd: f64 },
    /// `model` predicts this item and every later one with the coefficients in this file
    /// (relative paths are resolved against the scenario file's folder by the runner). One
    /// per scenario: `model` takes one `--swap-model`.
    Model { coefficients: PathBuf },
}

impl Change {
    /// The feature this change moves, if it moves one.
    pub fn feature(&self) -> Option<usize> {
        match self {
            Change::Shift { feature, .. } | Change::Scale { feature, .. } => Some(*feature),
            Change::Label { .. } | Change::Model { .. } => None,
        }
    }

    /// A short description, e.g. `shift bmi +2 sd`.
    pub fn describe(&self) -> String {
        match self {
            Change::Shift { feature, sd } => {
                format!("shift {} {sd:+} sd", DIABETES_FEATURE_NAMES[*feature])
            }
            Change::Scale { feature, factor } => {
                format!("scale {} ×{factor}", DIABETES_FEATURE_NAMES[*feature])
            }
            Change::Label { sd } => format!("shift label {sd:+} sd"),
            Change::Model { coefficients } => format!("swap model to {}", coefficients.display()),
        }
    }
}

/// A fault at a time after the load started.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub action: FaultAction,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// SIGKILL (`kill: true`) or SIGTERM the service, start it again after `down`.
    Stop {
        service: Service,
        kill: bool,
        down: Duration,
    },
    /// `rabbitmqctl stop_app`, `start_app` after `down`.
    BrokerRestart { down: Duration },
    /// The proxy between the services and the broker holds every byte for `down`.
    Partition { down: Duration },
    /// `count` messages no service can process, published half to `features`, half to
    /// `y_true`.
    Poison { count: u64 },
}

impl FaultAction {
    /// How long the fault lasts (zero for a poison flood, which is one moment).
    pub fn down(&self) -> Duration {
        match self {
            FaultAction::Stop { down, .. }
            | FaultAction::BrokerRestart { down }
            | FaultAction::Partition { down } => *down,
            FaultAction::Poison { .. } => Duration::ZERO,
        }
    }

    /// A short description, e.g. `sigkill metric, down 2 s`.
    pub fn describe(&self) -> String {
        match self {
            FaultAction::Stop {
                service,
                kill,
                down,
            } => format!(
                "{} {}, down {} s",
                if *kill { "sigkill" } else { "sigterm" },
                service.as_str(),
                down.as_secs_f64()
            ),
            FaultAction::BrokerRestart { down } => {
                format!("broker app stopped for {} s", down.as_secs_f64())
            }
            FaultAction::Partition { down } => {
                format!("network to the broker held for {} s", down.as_secs_f64())
            }
            FaultAction::Poison { count } => format!("{count} poison messages"),
        }
    }
}

/// A checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub plan: Plan,
    pub services: Services,
    /// In item order.
    pub drifts: Vec<Drift>,
    /// In time order.
    pub faults: Vec<Fault>,
    pub hypothesis: Hypothesis,
}

/// Longest time or rate step accepted: a day.
const MAX_SECONDS: f64 = 24.0 * 3600.0;

fn seconds(key: &str, value: f64, allow_zero: bool) -> Result<Duration, ScenarioError> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        let least = if allow_zero { "0 or more" } else { "above 0" };
        return Err(invalid(
            key,
            format!("{value} is not a number of seconds {least}"),
        ));
    }
    if value > MAX_SECONDS {
        return Err(invalid(key, format!("{value} s is more than a day")));
    }
    Ok(Duration::from_secs_f64(value))
}

fn rate(key: &str, value: f64) -> Result<f64, ScenarioError> {
    if !value.is_finite() || value <= 0.0 || value > 1e6 {
        return Err(invalid(
            key,
            format!("{value} is not a rate in items per second (above 0, at most 1 000 000)"),
        ));
    }
    Ok(value)
}

fn feature_index(key: &str, name: &Option<String>) -> Result<usize, ScenarioError> {
    let Some(name) = name else {
        return Err(invalid(key, "missing: name the feature to change"));
    };
    DIABETES_FEATURE_NAMES
        .iter()
        .position(|known| known == name)
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "`{name}` is not a feature; the features are {}",
                    DIABETES_FEATURE_NAMES.join(", ")
                ),
            )
        })
}

fn finite(key: &str, value: Option<f64>, what: &str) -> Result<f64, ScenarioError> {
    match value {
        Some(v) if v.is_finite() => Ok(v),
        Some(v) => Err(invalid(key, format!("{v} is not a finite number"))),
        None => Err(invalid(key, format!("missing: {what}"))),
    }
}

/// Refuses a key that means nothing for this kind.
fn unused<T>(key: &str, value: &Option<T>, kind: &str) -> Result<(), ScenarioError> {
    match value {
        Some(_) => Err(invalid(key, format!("means nothing for kind `{kind}`"))),
        None => Ok(()),
    }
}

impl Scenario {
    /// Parses and checks a scenario file; `stem` (the file's name without `.toml`) names it
    /// when it has no `name`.
    pub fn parse(text: &str, stem: &str) -> Result<Self, ScenarioError> {
        let file: ScenarioFile = toml::from_str(text)?;
        Self::check(file, stem)
    }

    fn check(file: ScenarioFile, stem: &str) -> Result<Self, ScenarioError> {
        let name = file.name.unwrap_or_else(|| stem.to_owned());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "name",
                format!(
                    "`{name}` must be letters, digits, `-` and `_` (it names folders and queues)"
                ),
            ));
        }
        let plan = check_load(&file.load)?;
        check_services(&file.services)?;
        let mut drifts = Vec::new();
        for (i, inject) in file.inject.iter().enumerate() {
            drifts.push(check_inject(&format!("inject[{i}]"), inject, &plan)?);
        }
        let swaps: Vec<usize> = file
            .inject
            .iter()
            .enumerate()
            .filter(|(_, inject)| inject.kind == DriftKind::Model)
            .map(|(i, _)| i)
            .collect();
        if let [_, second, ..] = swaps[..] {
            return Err(invalid(
                format!("inject[{second}]"),
                "a second model swap: model takes one (`--swap-model`)",
            ));
        }
        drifts.sort_by_key(|d| d.item);
        let mut faults = Vec::new();
        for (i, fault) in file.fault.iter().enumerate() {
            let key = format!("fault[{i}]");
            faults.push((key.clone(), check_fault(&key, fault, &plan)?));
        }
        faults.sort_by_key(|(_, f)| f.at);
        check_overlaps(&faults)?;
        let faults = faults.into_iter().map(|(_, fault)| fault).collect();
        let mut targets = vec![(
            "hypothesis.p99_latency_ms".to_owned(),
            file.hypothesis.p99_latency_ms,
        )];
        for (i, step) in file.load.steps.iter().enumerate() {
            targets.push((
                format!("load.steps[{i}].p99_latency_ms"),
                step.p99_latency_ms,
            ));
        }
        for (key, target) in targets {
            if let Some(p99) = target
                && !(p99.is_finite() && p99 > 0.0)
            {
                return Err(invalid(
                    key,
                    format!("{p99} is not a latency in milliseconds above 0"),
                ));
            }
        }
        let mut hypothesis = file.hypothesis;
        hypothesis.step_p99_latency_ms = file.load.steps.iter().map(|s| s.p99_latency_ms).collect();
        Ok(Scenario {
            name,
            description: file.description,
            seed: file.seed,
            plan,
            services: file.services,
            drifts,
            faults,
            hypothesis,
        })
    }
}

fn check_load(load: &LoadFile) -> Result<Plan, ScenarioError> {
    match (load.steps.is_empty(), load.count, load.rate) {
        (false, None, None) => {
            let mut steps = Vec::new();
            for (i, step) in load.steps.iter().enumerate() {
                let rate = rate(&format!("load.steps[{i}].rate"), step.rate)?;
                let duration = seconds(&format!("load.steps[{i}].seconds"), step.seconds, false)?;
                let items = (rate * duration.as_secs_f64()).round() as u64;
                if items == 0 {
                    return Err(invalid(
                        format!("load.steps[{i}]"),
                        "sends no item (rate × seconds rounds to 0)",
                    ));
                }
                steps.push(Step { rate, items });
            }
            Ok(Plan::new(steps))
        }
        (true, Some(count), Some(r)) => {
            let rate = rate("load.rate", r)?;
            if count == 0 {
                return Err(invalid("load.count", "0 items: send at least one"));
            }
            if count as f64 / rate > MAX_SECONDS {
                return Err(invalid("load.count", "takes more than a day at load.rate"));
            }
            Ok(Plan::new(vec![Step { rate, items: count }]))
        }
        (true, Some(_), None) => Err(invalid(
            "load.rate",
            "missing: a count is sent at a rate (items per second)",
        )),
        (true, None, _) => Err(invalid(
            "load",
            "give `steps = [{ rate = R, seconds = S }, …]`, or `count` and `rate`",
        )),
        (false, _, _) => Err(invalid("load", "`steps` or `count` and `rate`, not both")),
    }
}

/// Refuses a fault that starts while another is still on (its `down` not over): a restart
/// of a service already down, or a broker stop while the network is held, would undo one
/// fault with the other and the run would measure neither.
fn check_overlaps(faults: &[(String, Fault)]) -> Result<(), ScenarioError> {
    for (index, (key, fault)) in faults.iter().enumerate() {
        for (earlier_key, earlier) in &faults[..index] {
            let end = earlier.at + earlier.action.down();
            let overlaps = if earlier.action.down().is_zero() {
                fault.at == earlier.at
            } else {
                fault.at < end
            };
            if overlaps {
                return Err(invalid(
                    format!("{key}.seconds"),
                    format!(
                        "{} s overlaps {earlier_key} ({}, from {} s to {} s): one fault at a time",
                        fault.at.as_secs_f64(),
                        earlier.action.describe(),
                        earlier.at.as_secs_f64(),
                        end.as_secs_f64()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_services(services: &Services) -> Result<(), ScenarioError> {
    if let Some(ttl) = services.join_ttl {
        seconds("services.join_ttl", ttl, false)?;
    }
    if let Some(interval) = services.status_interval {
        seconds("services.status_interval", interval, false)?;
    }
    if services.prefetch == Some(0) {
        return Err(invalid("services.prefetch", "0: at least 1"));
    }
    if services.drift_window == Some(0) {
        return Err(invalid("services.drift_window", "0: at least 1"));
    }
    if services.window == Some(0) {
        return Err(invalid("services.window", "0: at least 1"));
    }
    Ok(())
}

fn check_inject(key: &str, inject: &InjectFile, plan: &Plan) -> Result<Drift, ScenarioError> {
    let item = match (inject.item, inject.seconds) {
        (Some(item), None) => item,
        (None, Some(at)) => plan.item_at(seconds(&format!("{key}.seconds"), at, true)?),
        _ => {
            return Err(invalid(
                key,
                "give when: `item` (0-based) or `seconds` after the load starts, one of them",
            ));
        }
    };
    if item >= plan.items() {
        return Err(invalid(
            key,
            format!(
                "item {item} is past the load's last item ({})",
                plan.items() - 1
            ),
        ));
    }
    let kind = match inject.kind {
        DriftKind::Shift => "shift",
        DriftKind::Scale => "scale",
        DriftKind::Label => "label",
        DriftKind::Model => "model",
    };
    let change = match inject.kind {
        DriftKind::Shift => {
            unused(&format!("{key}.factor"), &inject.factor, kind)?;
            unused(&format!("{key}.coefficients"), &inject.coefficients, kind)?;
            Change::Shift {
                feature: feature_index(&format!("{key}.feature"), &inject.feature)?,
                sd: finite(
                    &format!("{key}.sd"),
                    inject.sd,
                    "standard deviations to shift by",
                )?,
            }
        }
        DriftKind::Scale => {
            unused(&format!("{key}.sd"), &inject.sd, kind)?;
            unused(&format!("{key}.coefficients"), &inject.coefficients, kind)?;
            Change::Scale {
                feature: feature_index(&format!("{key}.feature"), &inject.feature)?,
                factor: finite(
                    &format!("{key}.factor"),
                    inject.factor,
                    "the factor the spread is multiplied by",
                )?,
            }
        }
        DriftKind::Label => {
            unused(&format!("{key}.feature"), &inject.feature, kind)?;
            unused(&format!("{key}.factor"), &inject.factor, kind)?;
            unused(&format!("{key}.coefficients"), &inject.coefficients, kind)?;
            Change::Label {
                sd: finite(
                    &format!("{key}.sd"),
                    inject.sd,
                    "standard deviations to shift by",
                )?,
            }
        }
        DriftKind::Model => {
            unused(&format!("{key}.feature"), &inject.feature, kind)?;
            unused(&format!("{key}.sd"), &inject.sd, kind)?;
            unused(&format!("{key}.factor"), &inject.factor, kind)?;
            let Some(coefficients) = inject.coefficients.clone() else {
                return Err(invalid(
                    format!("{key}.coefficients"),
                    "missing: the coefficients JSON model is restarted with",
                ));
            };
            Change::Model { coefficients }
        }
    };
    Ok(Drift { item, change })
}

fn check_fault(key: &str, fault: &FaultFile, plan: &Plan) -> Result<Fault, ScenarioError> {
    let at = seconds(&format!("{key}.seconds"), fault.seconds, true)?;
    if at >= plan.duration() {
        return Err(invalid(
            format!("{key}.seconds"),
            format!(
                "{} s is not within the load ({} s)",
                fault.seconds,
                plan.duration().as_secs_f64()
            ),
        ));
    }
    let down = || match fault.down {
        Some(down) => seconds(&format!("{key}.down"), down, false),
        None => Err(invalid(
            format!("{key}.down"),
            "missing: seconds before it is undone",
        )),
    };
    let service = || {
        fault
            .service
            .ok_or_else(|| invalid(format!("{key}.service"), "missing: `model` or `metric`"))
    };
    let action = match fault.kind {
        FaultKind::Sigkill | FaultKind::Sigterm => {
            unused(&format!("{key}.count"), &fault.count, "sigkill/sigterm")?;
            FaultAction::Stop {
                service: service()?,
                kill: fault.kind == FaultKind::Sigkill,
                down: down()?,
            }
        }
        FaultKind::BrokerRestart | FaultKind::Partition => {
            unused(
                &format!("{key}.service"),
                &fault.service,
                "broker-restart/partition",
            )?;
            unused(
                &format!("{key}.count"),
                &fault.count,
                "broker-restart/partition",
            )?;
            let down = down()?;
            if fault.kind == FaultKind::Partition {
                FaultAction::Partition { down }
            } else {
                FaultAction::BrokerRestart { down }
            }
        }
        FaultKind::Poison => {
            unused(&format!("{key}.service"), &fault.service, "poison")?;
            unused(&format!("{key}.down"), &fault.down, "poison")?;
            match fault.count {
                Some(count @ 1..) => FaultAction::Poison { count },
                _ => {
                    return Err(invalid(
                        format!("{key}.count"),
                        "missing or 0: how many poison messages",
                    ));
                }
            }
        }
    };
    Ok(Fault { at, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "seed = 1\n[load]\ncount = 100\nrate = 50\n";

    fn error(text: &str) -> String {
        Scenario::parse(text, "t")
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_minimal_file_is_a_count_at_a_rate() {
        let scenario = Scenario::parse(BASE, "baseline").expect("valid");
        assert_eq!(scenario.name, "baseline");
        assert_eq!(scenario.plan.items(), 100);
        assert_eq!(scenario.plan.duration(), Duration::from_secs(2));
        assert!(scenario.hypothesis.exactly_once);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(error("seed = 1\n[load]\ncount = 5\n").contains("`load.rate`"));
        assert!(
            error(&format!(
                "{BASE}[[inject]]\nitem = 5\nkind = \"shift\"\nfeature = \"bmx\"\nsd = 2\n"
            ))
            .contains("`inject[0].feature`: `bmx` is not a feature")
        );
        assert!(
            error(&format!(
                "{BASE}[[inject]]\nitem = 500\nkind = \"label\"\nsd = 2\n"
            ))
            .contains("past the load's last item")
        );
        assert!(
            error(&format!(
                "{BASE}[[fault]]\nseconds = 1\nkind = \"sigkill\"\ndown = 1\n"
            ))
            .contains("`fault[0].service`")
        );
        assert!(
            error(&format!(
                "{BASE}[[fault]]\nseconds = 9\nkind = \"partition\"\ndown = 1\n"
            ))
            .contains("`fault[0].seconds`")
        );
        assert!(
            error(&format!(
                "{BASE}[[inject]]\nitem = 5\nkind = \"label\"\nsd = 1\nfeature = \"bmi\"\n"
            ))
            .contains("`inject[0].feature`: means nothing")
        );
        // Unknown keys and kinds: the TOML parser names them.
        let unknown = error(&format!("{BASE}[hypothesis]\nexactly_one = true\n"));
        assert!(unknown.contains("exactly_one"), "{unknown}");
        let kind = error(&format!(
            "{BASE}[[fault]]\nseconds = 1\nkind = \"sigstop\"\n"
        ));
        assert!(kind.contains("sigstop"), "{kind}");
    }

    #[test]
    fn overlapping_faults_and_a_second_model_swap_are_refused() {
        let kill = "[[fault]]\nseconds = 1\nkind = \"sigkill\"\nservice = \"model\"\ndown = 0.5\n";
        let partition = "[[fault]]\nseconds = 1.2\nkind = \"partition\"\ndown = 0.3\n";
        let overlap = error(&format!("{BASE}{kill}{partition}"));
        assert!(
            overlap.contains("`fault[1].seconds`: 1.2 s overlaps fault[0]"),
            "{overlap}"
        );
        let poison = "[[fault]]\nseconds = 1\nkind = \"poison\"\ncount = 5\n";
        assert!(error(&format!("{BASE}{poison}{poison}")).contains("overlaps"));
        // One after the other is fine, whatever order the file lists them in.
        let later = "[[fault]]\nseconds = 1.5\nkind = \"partition\"\ndown = 0.3\n";
        let scenario = Scenario::parse(&format!("{BASE}{later}{kill}"), "t").expect("valid");
        assert_eq!(scenario.faults.len(), 2);
        assert_eq!(scenario.faults[0].at, Duration::from_secs(1));
        let swap = "[[inject]]\nitem = 5\nkind = \"model\"\ncoefficients = \"m.json\"\n";
        assert!(error(&format!("{BASE}{swap}{swap}")).contains("`inject[1]`: a second model swap"));
        assert!(
            error(&format!("{BASE}[hypothesis]\np99_latency_ms = 0\n"))
                .contains("`hypothesis.p99_latency_ms`")
        );
    }

    #[test]
    fn a_step_may_set_its_own_p99_target() {
        let text = "seed = 1\n[load]\nsteps = [{ rate = 10, seconds = 2, p99_latency_ms = 10 }, { rate = 100, seconds = 1 }]\n";
        let scenario = Scenario::parse(text, "t").expect("valid");
        assert_eq!(scenario.hypothesis.step_p99_latency_ms, [Some(10.0), None]);
        let zero = text.replace("p99_latency_ms = 10", "p99_latency_ms = -1");
        let error = Scenario::parse(&zero, "t")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("`load.steps[0].p99_latency_ms`"), "{error}");
    }

    #[test]
    fn injections_at_a_time_land_on_the_item_scheduled_then() {
        let text = "seed = 1\n[load]\nsteps = [{ rate = 10, seconds = 2 }, { rate = 100, seconds = 1 }]\n\
                    [[inject]]\nseconds = 2.5\nkind = \"shift\"\nfeature = \"bmi\"\nsd = 2\n";
        let scenario = Scenario::parse(text, "t").expect("valid");
        assert_eq!(scenario.plan.items(), 120);
        assert_eq!(
            scenario.drifts,
            vec![Drift {
                item: 70,
                change: Change::Shift {
                    feature: 2,
                    sd: 2.0
                }
            }]
        );
    }
}
