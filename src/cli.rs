//! The `nnmon` command line. Every flag has an environment-variable twin, so the same
//! settings work from a shell, a justfile, Docker Compose or a Nix app.

use clap::{ArgGroup, Args, Parser, Subcommand};
use nnmon_broker::{BrokerUrls, QueueType, TlsFiles};
use nnmon_proto::MAX_SHARDS;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Real-time monitoring of a machine-learning model over RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "nnmon", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream diabetes samples: features to `features`, true values to `y_true`.
    Features(FeaturesArgs),
    /// Predict every sample from `features` and publish to `y_pred`.
    Model(ModelArgs),
    /// Join `y_true` with `y_pred` by ID and log the absolute error to CSV.
    Metric(MetricArgs),
    /// Redraw the error-distribution histogram from the CSV log.
    Plot(PlotArgs),
    /// Fit the linear model on the data set and write its coefficients as JSON.
    Train(TrainArgs),
    /// Run a scenario file against the real services, or compare two runs.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Start the services, run the file's load, drifts and faults, judge its hypothesis
    /// and write summary.json, timeline.csv, env.json, report.md and charts; exits 1
    /// when the hypothesis failed.
    Run(ScenarioRunArgs),
    /// Print two runs' summaries side by side with the relative change.
    Compare(ScenarioCompareArgs),
}

#[derive(Debug, Args)]
pub struct ScenarioRunArgs {
    /// The scenario file (TOML; see the README's Scenarios section).
    pub path: PathBuf,
    /// Folder for the results; `results/<name>-<UTC time>/` by default.
    #[arg(long, env = "NNMON_SCENARIO_OUT")]
    pub out: Option<PathBuf>,
    /// AMQP URL of the broker the services use.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,
    /// The command that runs rabbitmqctl against that broker (split on spaces, e.g.
    /// `docker exec NAME rabbitmqctl`), for the broker-restart fault.
    #[arg(long, env = "NNMON_RABBITMQCTL", default_value = "rabbitmqctl")]
    pub rabbitmqctl: String,
    /// The broker's TLS files (amqps://), for the runner's own connection and every
    /// service's.
    #[command(flatten)]
    pub tls: TlsFlags,
}

#[derive(Debug, Args)]
pub struct ScenarioCompareArgs {
    /// A run's folder or its summary.json.
    pub a: PathBuf,
    /// Another run's folder or summary.json.
    pub b: PathBuf,
}

/// Where the broker is, how to reach it, and which pipeline on it to use.
///
/// Parsed from [`BrokerFlags`]: the TLS files travel inside `amqp_url` (see
/// [`BrokerUrls::with_tls`]), so that every connection the services make uses them.
#[derive(Debug)]
pub struct BrokerArgs {
    /// The broker's URL, or its nodes' (a comma-separated list), with the TLS files of
    /// `--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`.
    pub amqp_url: BrokerUrls,
    pub queue_prefix: String,
    pub prefetch: u16,
    /// The type of the pipeline's queues.
    pub queue_type: QueueType,
}

/// The broker flags as typed; [`BrokerArgs`] is what the services get.
#[derive(Debug, Args)]
struct BrokerFlags {
    /// AMQP URL of the broker (amqp:// or amqps://); its password is never logged.
    /// `?auth_mechanism=external` logs in with the client certificate alone. A
    /// comma-separated list names a cluster's nodes: the first that answers is used, and
    /// when it goes away the next one.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        value_parser = BrokerUrlParser
    )]
    amqp_url: BrokerUrls,
    /// Type of the pipeline's queues: `classic` (one node, as the seed), or `quorum`
    /// (replicated over a cluster's nodes; durable). A queue that exists as the other
    /// type is refused, naming it.
    #[arg(long, env = "NNMON_QUEUE_TYPE", default_value = "classic", value_name = "classic|quorum", value_parser = parse_queue_type)]
    queue_type: QueueType,
    /// Prepended to every queue name, so several pipelines can share one broker.
    #[arg(long, env = "NNMON_QUEUE_PREFIX", default_value = "", value_parser = parse_prefix)]
    queue_prefix: String,
    /// Unacknowledged messages each consumer may hold (metric has two), and the publish
    /// confirm window.
    #[arg(long, env = "NNMON_PREFETCH", default_value_t = 500, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..))]
    prefetch: u16,
    #[command(flatten)]
    tls: TlsFlags,
}

/// The broker's TLS files, as every command that talks to the broker takes them.
#[derive(Debug, Args)]
pub struct TlsFlags {
    /// PEM file of the CA certificate(s) the broker's certificate must come from (amqps://).
    /// It REPLACES the system's roots: only these CAs are trusted. Without it, the system's
    /// roots are.
    #[arg(long, env = "NNMON_TLS_CA_FILE", value_name = "PEM")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate shown to a broker that asks for one (amqps://),
    /// intermediate CAs after it; with --tls-key-file.
    #[arg(
        long,
        env = "NNMON_TLS_CERT_FILE",
        value_name = "PEM",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key, unencrypted (PKCS#8, PKCS#1 or
    /// SEC1); with --tls-cert-file. Keep it private (chmod 600): nnmon warns otherwise.
    #[arg(
        long,
        env = "NNMON_TLS_KEY_FILE",
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
}

impl TlsFlags {
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }
}

impl BrokerFlags {
    fn into_args(self) -> Result<BrokerArgs, clap::Error> {
        let amqp_url = self.amqp_url.with_tls(self.tls.files()).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                format!("--amqp-url: {e}"),
            )
        })?;
        Ok(BrokerArgs {
            amqp_url,
            queue_prefix: self.queue_prefix,
            prefetch: self.prefetch,
            queue_type: self.queue_type,
        })
    }
}

impl clap::FromArgMatches for BrokerArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        BrokerFlags::from_arg_matches(matches)?.into_args()
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for BrokerArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        BrokerFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        BrokerFlags::augment_args_for_update(command)
    }
}

/// What a service tells the people and scrapers watching it.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Serve Prometheus metrics at /metrics and a health check at /healthz on this address
    /// (HOST:PORT, e.g. 127.0.0.1:9464); off by default.
    #[arg(long, env = "NNMON_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds between two progress lines on the terminal (and status-file updates).
    #[arg(long, env = "NNMON_STATUS_INTERVAL", default_value = "10", allow_negative_numbers = true, value_parser = parse_period)]
    pub status_interval: Duration,
}

/// How many metric shards the pipeline has; every service of one pipeline needs the same.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Metric shards. 1: the seed's topology (queues y_true and y_pred on the default
    /// exchange). N > 1: true values and predictions go through a consistent-hash exchange
    /// on the message ID (RabbitMQ's plugin rabbitmq_consistent_hash_exchange) to N pairs
    /// of shard queues, each consumed by one `metric --shard I`, which publish their rows
    /// for `plot --shards N`.
    #[arg(long, env = "NNMON_SHARDS", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_SHARDS)))]
    pub shards: u16,
}

/// Which shard a `metric` consumes, checked against `--shards`.
#[derive(Clone, Copy, Debug)]
pub struct MetricShardArgs {
    pub shards: u16,
    /// 0 to `shards - 1`.
    pub shard: u16,
}

/// The shard flags as typed; [`MetricShardArgs`] is what `metric` gets.
#[derive(Debug, Args)]
struct MetricShardFlags {
    #[command(flatten)]
    shards: ShardsArgs,
    /// The shard this metric consumes (0 to N-1 of --shards N): its queues
    /// y_true.shard-I and y_pred.shard-I, and its files in <log-dir>/shard-I/.
    #[arg(
        long,
        env = "NNMON_SHARD",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    shard: u16,
}

impl clap::FromArgMatches for MetricShardArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = MetricShardFlags::from_arg_matches(matches)?;
        let shards = flags.shards.shards;
        if flags.shard >= shards {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--shard {} does not exist with --shards {shards}: shards are numbered 0 to {}\n",
                    flags.shard,
                    shards - 1
                ),
            ));
        }
        Ok(Self {
            shards,
            shard: flags.shard,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for MetricShardArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        MetricShardFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        MetricShardFlags::augment_args_for_update(command)
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("open_loop").args(["rate", "scenario"]).multiple(true)))]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub shards: ShardsArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Seconds to wait between items (fractions and 0 allowed): closed loop, the next item
    /// waits for the previous one to be handed over.
    #[arg(long, env = "NNMON_DELAY", default_value = "10", allow_negative_numbers = true, value_parser = parse_seconds)]
    pub delay: Duration,
    /// Items per second on a fixed schedule (open loop): item i is due at start + i/RATE
    /// whatever the pipeline does, and carries that time, so latency counts from it.
    /// Instead of --delay: when both are set (NNMON_DELAY from the environment, as compose
    /// sets it, or its default), --rate wins.
    #[arg(long, env = "NNMON_RATE", value_name = "ITEMS_PER_S", allow_negative_numbers = true, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Items to send before exiting once all are confirmed; 0 streams forever.
    #[arg(
        long,
        env = "NNMON_COUNT",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub count: u64,
    /// Seed for the row sequence, making it reproducible; random when absent.
    #[arg(long, env = "NNMON_SEED", allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Send what a scenario file says: its load (open loop), seed and drift injections.
    /// Instead of --rate, --count and --seed; it wins over --delay as --rate does.
    #[arg(long, env = "NNMON_SCENARIO", value_name = "TOML", conflicts_with_all = ["rate", "count", "seed"])]
    pub scenario: Option<PathBuf>,
    /// Start of an open-loop schedule (--rate or --scenario), in microseconds since the
    /// Unix epoch: item i is due at this time plus its offset, so a caller that chose the
    /// time (`nnmon scenario run`) measures against the same t0. Without it the schedule
    /// starts when features first reaches the broker; a time already past makes the
    /// overdue items go at once (logged as late). At most an hour ahead.
    #[arg(
        long,
        env = "NNMON_START_AT",
        value_name = "EPOCH_US",
        allow_negative_numbers = true,
        value_parser = parse_start_at,
        requires = "open_loop"
    )]
    pub start_at: Option<u64>,
    /// Append the ID of every item the broker confirmed to this file (an audit trail to
    /// check the metric log against).
    #[arg(long, env = "NNMON_CONFIRMED_IDS")]
    pub confirmed_ids: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub shards: ShardsArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Where `feature_drift.json` (input drift, for `plot`'s page) is written.
    #[command(flatten)]
    pub logs: LogDirArgs,
    /// A coefficients JSON written by `nnmon train`; the built-in OLS model when absent.
    #[arg(long, env = "NNMON_COEFFICIENTS")]
    pub coefficients: Option<PathBuf>,
    /// A second coefficients JSON that predicts every item numbered `--swap-at-item` or
    /// higher: a model swap at an exact item, without a restart.
    #[arg(long, env = "NNMON_SWAP_MODEL", requires = "swap_at_item")]
    pub swap_model: Option<PathBuf>,
    /// The first item (0-based, the `item` number features puts in each message) that
    /// `--swap-model` predicts. Messages without a number keep the first model.
    #[arg(
        long,
        env = "NNMON_SWAP_AT_ITEM",
        requires = "swap_model",
        allow_negative_numbers = true
    )]
    pub swap_at_item: Option<u64>,
    /// Recent feature vectors each input-drift test compares with the training data.
    #[arg(long, env = "NNMON_DRIFT_WINDOW", default_value_t = 500, allow_negative_numbers = true, value_parser = parse_positive)]
    pub drift_window: usize,
}

#[derive(Debug, Args)]
pub struct LogDirArgs {
    /// Folder of metric_log.csv, orphans.csv, the status files and error_distribution.png.
    #[arg(long, env = "NNMON_LOG_DIR", default_value = "logs")]
    pub log_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct MetricArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub shard: MetricShardArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
    #[command(flatten)]
    pub logs: LogDirArgs,
    /// Grace, in seconds of publish time: a true value or prediction is logged as an
    /// orphan once the other side has moved this far past it (a silent side holds it);
    /// halves whose ID and body carry no time wait this long by the wall clock.
    #[arg(long, env = "NNMON_JOIN_TTL", default_value = "300", allow_negative_numbers = true, value_parser = parse_period)]
    pub join_ttl: Duration,
    /// Rows in the window of the recent statistics (MAE, RMSE, bias, R² of the last N rows).
    #[arg(long, env = "NNMON_WINDOW", default_value_t = 1000, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub window: u32,
    /// Halves of one side that may wait for their partner at once; beyond it that side is
    /// paused (its messages wait in the broker) until the other catches up.
    #[arg(long, env = "NNMON_JOIN_MAX_PENDING", default_value_t = 100_000, allow_negative_numbers = true, value_parser = parse_positive)]
    pub join_max_pending: usize,
    /// How many recently written IDs are remembered to drop redelivered duplicates (about
    /// 40 bytes each, rebuilt from the log on start).
    #[arg(long, env = "NNMON_DEDUP_WINDOW", default_value_t = 250_000, allow_negative_numbers = true, value_parser = parse_positive)]
    pub dedup_window: usize,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub logs: LogDirArgs,
    /// With --shards N > 1, plot shows the rows all shards publish over the broker (the
    /// broker flags say where); with 1 it reads <log-dir>/metric_log.csv.
    #[command(flatten)]
    pub shards: ShardsArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Seconds between refreshes.
    #[arg(long, env = "NNMON_PLOT_INTERVAL", default_value = "10", allow_negative_numbers = true, value_parser = parse_period)]
    pub interval: Duration,
    /// Render once and exit.
    #[arg(long, env = "NNMON_PLOT_ONCE")]
    pub once: bool,
    /// Rows in the window of the recent statistics (MAE, RMSE, bias… of the last N rows).
    #[arg(long, env = "NNMON_WINDOW", default_value_t = 1000, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub window: u32,
    /// Serve the live page, /api/summary, /events and /error_distribution.png on this
    /// address (HOST:PORT); off by default.
    #[arg(long, env = "NNMON_HTTP_ADDR")]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Where to write the coefficients JSON.
    #[arg(long, env = "NNMON_MODEL_OUTPUT", default_value = "models/ols.json")]
    pub output: PathBuf,
}

/// Parses `--amqp-url` without echoing the raw value (clap's own errors quote it, and it
/// holds a password).
#[derive(Clone)]
struct BrokerUrlParser;

impl clap::builder::TypedValueParser for BrokerUrlParser {
    type Value = BrokerUrls;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<BrokerUrls, clap::Error> {
        let invalid = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--amqp-url: {reason}\n"),
            )
            .with_cmd(command)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("the URL is not valid UTF-8".into()))?;
        text.parse()
            .map_err(|e: nnmon_broker::InvalidUrl| invalid(e.to_string()))
    }
}

/// Longest queue prefix: AMQP queue names hold 255 bytes, and the longest suffix is
/// `dead_letter`.
const MAX_PREFIX_BYTES: usize = 200;

/// Longest duration accepted: a year is more than any delay, interval or TTL needs.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn parse_queue_type(text: &str) -> Result<QueueType, String> {
    text.parse()
}

fn parse_prefix(text: &str) -> Result<String, String> {
    if text.len() > MAX_PREFIX_BYTES {
        return Err(format!(
            "at most {MAX_PREFIX_BYTES} bytes (queue names hold 255)"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("control characters cannot be part of a queue name".into());
    }
    Ok(text.to_owned())
}

/// Parses a non-negative, finite number of seconds such as `10`, `0.5` or `0`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if seconds > MAX_SECONDS {
        return Err(format!("`{text}` is more than a year"));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` must be a finite number of seconds, 0 or more"))
}

/// Shortest interval or TTL: the timers' resolution. Zero would make a refresh loop spin
/// or every half expire at once.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Parses an interval or a TTL: seconds like [`parse_seconds`], but at least 1 ms.
fn parse_period(text: &str) -> Result<Duration, String> {
    let period = parse_seconds(text)?;
    if period < MIN_PERIOD {
        return Err(format!(
            "`{text}` is too short: at least {} seconds",
            MIN_PERIOD.as_secs_f64()
        ));
    }
    Ok(period)
}

/// Parses a rate in items per second: above 0, at most a million.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1e6 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate in items per second (above 0, at most 1000000)"
        )),
    }
}

/// The furthest ahead `--start-at` may be: later is a mistake (a time in milliseconds,
/// or seconds), and would leave features silent.
const START_AT_AHEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parses `--start-at`: epoch microseconds, at most [`START_AT_AHEAD`] from now.
fn parse_start_at(text: &str) -> Result<u64, String> {
    let at = text
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("`{text}` is not a time in microseconds since the Unix epoch"))?;
    let latest = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| (now + START_AT_AHEAD).as_micros());
    if u128::from(at) > latest {
        return Err(format!(
            "`{text}` is more than {} s from now: microseconds since the Unix epoch, at most an hour ahead",
            START_AT_AHEAD.as_secs()
        ));
    }
    Ok(at)
}

/// Parses a count that bounds something and so cannot be 0: `1` or more.
fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("`0` would leave no room at all: 1 or more".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("`{text}` is not a whole number, 1 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_accept_fractions_and_zero_only() {
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("1e19").is_err());
    }

    /// The error for `args`, which must be the value parser's refusal.
    fn refused_value(args: &[&str]) -> clap::Error {
        let error = Cli::try_parse_from(args).expect_err("must be refused");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{args:?}: {error}"
        );
        error
    }

    #[test]
    fn periods_and_bounds_refuse_zero() {
        assert_eq!(parse_period("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_period("0.001"), Ok(MIN_PERIOD));
        for zero in ["0", "0.0", "0.0000001"] {
            let error = parse_period(zero).expect_err("too short");
            assert!(error.contains("at least 0.001 seconds"), "{error}");
        }
        assert_eq!(parse_positive("7"), Ok(7));
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("-1").is_err());
        for args in [
            &["nnmon", "plot", "--interval", "0"][..],
            &["nnmon", "metric", "--join-ttl", "0"],
            &["nnmon", "metric", "--join-max-pending", "0"],
            &["nnmon", "metric", "--dedup-window", "0"],
        ] {
            refused_value(args);
        }
        let features = Cli::try_parse_from(["nnmon", "features", "--delay", "0"]);
        assert!(features.is_ok(), "a zero delay streams as fast as it can");
    }

    #[test]
    fn negative_numbers_get_the_value_parsers_message() {
        // Without allow_negative_numbers clap takes `-1` for a flag ("unexpected
        // argument") and never says what is wrong with the value.
        for args in [
            &["nnmon", "features", "--delay", "-1"][..],
            &["nnmon", "features", "--count", "-1"],
            &["nnmon", "features", "--rate", "-5"],
            &["nnmon", "features", "--rate", "0"],
            &["nnmon", "features", "--seed", "-1"],
            &["nnmon", "features", "--prefetch", "-1"],
            &["nnmon", "metric", "--join-ttl", "-1"],
            &["nnmon", "metric", "--join-max-pending", "-1"],
            &["nnmon", "metric", "--dedup-window", "-1"],
            &["nnmon", "plot", "--interval", "-0.5"],
        ] {
            refused_value(args);
        }
        let error = refused_value(&["nnmon", "features", "--delay", "-1"]);
        assert!(error.to_string().contains("0 or more"), "{error}");
    }

    #[test]
    fn rate_wins_over_delay_and_a_scenario_excludes_count() {
        // NNMON_DELAY comes from compose's environment whatever the user asks for.
        let both = Cli::try_parse_from(["nnmon", "features", "--rate", "100", "--delay", "1"]);
        let Command::Features(args) = both.expect("valid").command else {
            unreachable!()
        };
        assert_eq!(args.rate, Some(100.0));
        let scenario =
            Cli::try_parse_from(["nnmon", "features", "--scenario", "s.toml", "--count", "5"]);
        assert_eq!(scenario.expect_err("conflict").exit_code(), 2);
        let rate = Cli::try_parse_from(["nnmon", "features", "--rate", "2.5"]).expect("valid");
        let Command::Features(args) = rate.command else {
            unreachable!()
        };
        assert_eq!(args.rate, Some(2.5));
    }

    #[test]
    fn a_model_swap_needs_both_its_file_and_its_item() {
        let both = [
            "nnmon",
            "model",
            "--swap-model",
            "m.json",
            "--swap-at-item",
            "3200",
        ];
        let Command::Model(args) = Cli::try_parse_from(both).expect("valid").command else {
            unreachable!()
        };
        assert_eq!(args.swap_at_item, Some(3200));
        for args in [
            &["nnmon", "model", "--swap-model", "m.json"][..],
            &["nnmon", "model", "--swap-at-item", "5"],
            &[
                "nnmon",
                "model",
                "--swap-model",
                "m.json",
                "--swap-at-item",
                "-1",
            ],
        ] {
            let error = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn start_at_needs_an_open_loop_and_at_most_an_hour_ahead() {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros();
        let soon = (now_us + 1_000_000).to_string();
        let parsed = Cli::try_parse_from(["nnmon", "features", "--rate", "5", "--start-at", &soon]);
        let Command::Features(args) = parsed.expect("valid").command else {
            unreachable!()
        };
        assert_eq!(args.start_at.map(u128::from), Some(now_us + 1_000_000));
        let scenario = [
            "nnmon",
            "features",
            "--scenario",
            "s.toml",
            "--start-at",
            "0",
        ];
        assert!(Cli::try_parse_from(scenario).is_ok());
        let too_late = (now_us + 2 * 3600 * 1_000_000).to_string();
        for args in [
            &["nnmon", "features", "--rate", "5", "--start-at", "-5"][..],
            &["nnmon", "features", "--rate", "5", "--start-at", &too_late],
            &[
                "nnmon",
                "features",
                "--rate",
                "5",
                "--start-at",
                "18446744073709551615",
            ],
            // Closed loop (--delay) has no schedule to start.
            &["nnmon", "features", "--start-at", &soon],
        ] {
            let error = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn a_metric_shard_must_be_one_of_the_shards() {
        let parsed = Cli::try_parse_from(["nnmon", "metric", "--shards", "3", "--shard", "2"]);
        let Command::Metric(args) = parsed.expect("valid").command else {
            unreachable!()
        };
        assert_eq!((args.shard.shards, args.shard.shard), (3, 2));
        for args in [
            &["nnmon", "metric", "--shards", "2", "--shard", "2"][..],
            &["nnmon", "metric", "--shard", "1"],
            &["nnmon", "metric", "--shards", "0"],
            &["nnmon", "features", "--shards", "-1"],
            &["nnmon", "plot", "--shards", "1025"],
        ] {
            let error = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        let error = Cli::try_parse_from(["nnmon", "metric", "--shards", "2", "--shard", "5"])
            .expect_err("refused");
        assert!(error.to_string().contains("numbered 0 to 1"), "{error}");
    }

    #[test]
    fn tls_files_reach_the_url_of_every_broker_service() {
        let tls = [
            "--amqp-url",
            "amqps://u:p@broker/%2f",
            "--tls-ca-file",
            "ca.pem",
            "--tls-cert-file",
            "client.pem",
            "--tls-key-file",
            "client.key",
        ];
        let expected = TlsFiles {
            ca_file: Some("ca.pem".into()),
            cert_file: Some("client.pem".into()),
            key_file: Some("client.key".into()),
        };
        for service in ["features", "model", "metric"] {
            let args = [&["nnmon", service][..], &tls].concat();
            let broker = match Cli::try_parse_from(args).expect("valid").command {
                Command::Features(args) => args.broker,
                Command::Model(args) => args.broker,
                Command::Metric(args) => args.broker,
                _ => unreachable!(),
            };
            assert_eq!(
                broker.amqp_url.first().tls_files(),
                Some(&expected),
                "{service}"
            );
        }
        let plain = Cli::try_parse_from([
            "nnmon",
            "model",
            "--amqp-url",
            "amqp://u:p@broker/",
            "--tls-ca-file",
            "ca.pem",
        ]);
        assert_eq!(plain.expect_err("amqp:// with TLS files").exit_code(), 2);
    }

    #[test]
    fn a_cluster_is_a_comma_list_and_quorum_a_queue_type() {
        let parsed = Cli::try_parse_from([
            "nnmon",
            "model",
            "--amqp-url",
            "amqp://u:p@a:5681/%2f,amqp://u:p@b:5682/%2f,amqp://u:p@c:5683/%2f",
            "--queue-type",
            "quorum",
        ]);
        let Command::Model(args) = parsed.expect("valid").command else {
            unreachable!()
        };
        assert_eq!(args.broker.amqp_url.nodes().len(), 3);
        assert_eq!(args.broker.queue_type, QueueType::Quorum);
        let default = Cli::try_parse_from(["nnmon", "metric"]).expect("valid");
        let Command::Metric(args) = default.command else {
            unreachable!()
        };
        assert_eq!(args.broker.queue_type, QueueType::Classic);
        let error = refused_value(&["nnmon", "features", "--queue-type", "stream"]);
        assert!(error.to_string().contains("classic or quorum"), "{error}");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["nnmon", "features", "--delay", "-3"][..],
            &["nnmon", "features", "--count", "many"],
            &["nnmon", "model", "--amqp-url", "http://x"],
            &["nnmon", "metric", "--prefetch", "0"],
            &["nnmon", "model", "--queue-prefix", &"p".repeat(201)],
            &["nnmon", "unknown"],
        ] {
            let error = Cli::try_parse_from(args).expect_err("must be refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }
}
