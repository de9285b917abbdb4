//! The bare broker's ceiling: the messages of `items` pipeline items (one per queue on
//! each of three durable queues, at once) moved with nnmon's guarantees (persistent
//! mandatory messages, confirms awaited in windows, prefetch and batched `multiple` acks)
//! by a [`Mover`]: a raw client, lapin ([`raw_lapin`](super::raw_lapin)) or amqprs
//! ([`raw_amqprs`](super::raw_amqprs)), or nnmon's own AMQP layer ([`seam`](super::seam)).
//! Each queue carries the pipeline's own kind of message on it, with nnmon's properties
//! ([`messages`](super::messages)), made before the clock starts. The same three queues
//! can also be moved in the pipeline's own order, chained ([`Mover::Chain`],
//! [`chain`](super::chain)): not a ceiling, but what nnmon-broker reaches on the
//! pipeline's flow with none of the services' work.
//!
//! Each queue's publisher and consumer (or each stage of the chain) run in a child process
//! of their own: a bench
//! binary (this one, or one built with the other client for the seam), started with
//! [`MOVER_VAR`] set, on a current-thread tokio runtime. That
//! is how nnmon's three services run (one process each, one runtime thread each), so the
//! raw clients' CPU per item is measured as nnmon's is, and not on the bench's own
//! multi-threaded runtime, whose wake-ups across threads would add to it.
//!
//! A child connects, says `ready` on stdout and waits for a line on stdin, so that set-up
//! stays outside the clock (as nnmon's services are connected before their first item);
//! then it moves its messages and prints when it published the first and acked the last
//! (epoch µs) and its own CPU time for that (`getrusage`, every thread). The run's time is
//! from the first message published by any child to the last acked by any (in the chain,
//! by `metric`'s stand-in: see [`chain`](super::chain)).

use super::broker_process::{BrokerProcess, BrokerWork};
use super::chain::{self, Role};
use super::messages::{Kind, messages};
use super::run::{ITERATION_TIMEOUT, fresh_prefix};
use super::{amqp_url, delete_queues, raw_amqprs, raw_lapin, seam};
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use nnmon_proto::QueueNames;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Set in a child: what moves its messages ([`Mover::name`]).
const MOVER_VAR: &str = "NNMON_BENCH_CEILING_MOVER";
/// Set in a child: the queue it publishes to and consumes from (in the chain, the queues'
/// prefix).
const QUEUE_VAR: &str = "NNMON_BENCH_CEILING_QUEUE";
/// Set in a child: how many messages it moves.
const COUNT_VAR: &str = "NNMON_BENCH_CEILING_COUNT";
/// Set in a child: its confirm window and prefetch.
const WINDOW_VAR: &str = "NNMON_BENCH_CEILING_WINDOW";
/// Set in a child: the pipeline queue whose kind of messages it moves ([`Kind::name`]).
const KIND_VAR: &str = "NNMON_BENCH_CEILING_KIND";
/// Set in a child of the chain: the service it stands in for ([`Role::name`]); its
/// [`QUEUE_VAR`] is then the prefix of the run's queue names.
const ROLE_VAR: &str = "NNMON_BENCH_CHAIN_ROLE";

/// What moves a ceiling's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mover {
    RawLapin,
    RawAmqprs,
    /// nnmon-broker's `Publisher` and `Inbox`, on the client the child binary was built
    /// with.
    Seam,
    /// nnmon-broker as [`Seam`](Self::Seam), the queues chained as the services chain them
    /// ([`chain`](super::chain)).
    Chain,
}

impl Mover {
    /// The raw client of a library (`lapin` or `amqprs`).
    pub fn raw(client: &str) -> Option<Self> {
        match client {
            "lapin" => Some(Self::RawLapin),
            "amqprs" => Some(Self::RawAmqprs),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::RawLapin => "raw-lapin",
            Self::RawAmqprs => "raw-amqprs",
            Self::Seam => "nnmon-broker",
            Self::Chain => "nnmon-broker-chain",
        }
    }
}

/// One ceiling run.
#[derive(Clone, Copy, Debug)]
pub struct Ceiling {
    /// From the first message published to the last acked.
    pub elapsed: Duration,
    /// CPU seconds of the three children during that.
    pub cpu_s: f64,
    /// Each child's share of `cpu_s`: per queue (`features`, `y_true`, `y_pred`), or per
    /// stage of the chain (`features`, `model`, `metric`).
    pub children_cpu_s: [f64; 3],
    /// The broker's CPU and disk syncs from `go` to the children's end, when it is local.
    pub broker: Option<BrokerWork>,
}

impl Ceiling {
    /// Its time and CPU seconds.
    pub fn figures(&self) -> (Duration, f64) {
        (self.elapsed, self.cpu_s)
    }
}

/// A ceiling run's three durable queues of `queue_type`, on fresh names: their prefix and
/// names.
async fn declare_queues(connection: &Connection, queue_type: &str) -> (String, QueueNames) {
    let prefix = fresh_prefix("ceiling");
    let queues = QueueNames::with_prefix(&prefix);
    let declare = connection.create_channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type)),
    );
    for name in [&queues.features, &queues.y_true, &queues.y_pred] {
        declare
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments.clone(),
            )
            .await
            .expect("declare");
    }
    let _ = declare.close(200, "done".into()).await;
    (prefix, queues)
}

/// One run of the bare broker by `mover` at `url` (one URL; `connection` is to it, for
/// declaring and deleting the queues), with a confirm window and prefetch of `window` (the
/// pipeline's), its children started from the bench binary `bench` (this one:
/// `std::env::current_exe()`).
pub async fn run_ceiling(
    connection: &Connection,
    url: &str,
    items: u64,
    queue_type: &str,
    window: u16,
    mover: Mover,
    bench: &Path,
) -> Ceiling {
    let (prefix, queues) = declare_queues(connection, queue_type).await;
    // The queues go whatever happens to the run: a failed one would leave them on the
    // broker, full of persistent messages.
    let run = std::panic::AssertUnwindSafe(run_children(
        &prefix, &queues, url, items, window, mover, bench,
    ));
    let ceiling = futures_util::FutureExt::catch_unwind(run).await;
    delete_queues(connection, &queues.all()).await;
    ceiling.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The three children of a ceiling run, one per queue of `queues` (or per stage of the
/// chain over them, named by their `prefix`), from start to finish.
async fn run_children(
    prefix: &str,
    queues: &QueueNames,
    url: &str,
    items: u64,
    window: u16,
    mover: Mover,
    bench: &Path,
) -> Ceiling {
    let mut children = Vec::new();
    // What each child moves: a queue and its kind of messages, or a stage of the chain.
    let parts: Vec<[(&str, String); 2]> = match mover {
        Mover::Chain => Role::ALL
            .map(|role| {
                [
                    (ROLE_VAR, role.name().to_owned()),
                    (QUEUE_VAR, prefix.to_owned()),
                ]
            })
            .into(),
        _ => [&queues.features, &queues.y_true, &queues.y_pred]
            .into_iter()
            .zip(Kind::ALL)
            .map(|(queue, kind)| {
                [
                    (KIND_VAR, kind.name().to_owned()),
                    (QUEUE_VAR, queue.clone()),
                ]
            })
            .collect(),
    };
    for part in parts {
        let mut child = Command::new(bench)
            .env(MOVER_VAR, mover.name())
            .envs(part)
            .env(COUNT_VAR, items.to_string())
            .env(WINDOW_VAR, window.to_string())
            .env("AMQP_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a ceiling child");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        children.push((child, stdin, stdout));
    }
    let next_line = async |lines: &mut tokio::io::Lines<_>| {
        tokio::time::timeout(ITERATION_TIMEOUT, lines.next_line())
            .await
            .expect("a ceiling child went silent")
            .expect("read a ceiling child's stdout")
            .expect("a ceiling child exited early (its panic is above)")
    };
    for (_, _, stdout) in &mut children {
        assert_eq!(next_line(stdout).await, "ready");
    }
    let broker = BrokerProcess::find(url).map(BrokerProcess::start);
    for (_, stdin, _) in &mut children {
        stdin
            .write_all(b"go\n")
            .await
            .expect("start a ceiling child");
    }
    let (mut first, mut last, mut children_cpu_s) = (u64::MAX, 0u64, [0.0; 3]);
    for ((child, _, stdout), child_cpu_s) in children.iter_mut().zip(&mut children_cpu_s) {
        let line = next_line(stdout).await;
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().expect("a ceiling child's figures"))
            .collect();
        let [published, acked, cpu] = fields[..] else {
            panic!("a ceiling child printed `{line}`");
        };
        first = first.min(published as u64);
        last = last.max(acked as u64);
        *child_cpu_s = cpu;
        assert!(child.wait().await.expect("wait").success());
    }
    Ceiling {
        elapsed: Duration::from_micros(last - first),
        cpu_s: children_cpu_s.iter().sum(),
        children_cpu_s,
        broker: broker.map(|span| span.finish()),
    }
}

/// In a ceiling child (started by [`run_ceiling`]): runs it and exits. Elsewhere returns at
/// once. Every bench that runs ceilings calls this first thing in `main`.
pub fn serve_if_child() {
    let Ok(mover) = std::env::var(MOVER_VAR) else {
        return;
    };
    let queue = std::env::var(QUEUE_VAR).expect("the child's queue");
    let count: u64 = std::env::var(COUNT_VAR)
        .ok()
        .and_then(|n| n.parse().ok())
        .expect("the child's message count");
    let window: u16 = std::env::var(WINDOW_VAR)
        .ok()
        .and_then(|n| n.parse().ok())
        .expect("the child's window");
    let url = amqp_url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ((first, last), cpu) = runtime.block_on(async {
        if mover == Mover::Chain.name() {
            let role = std::env::var(ROLE_VAR)
                .ok()
                .and_then(|name| Role::from_name(&name))
                .expect("the child's stage of the chain");
            let queues = QueueNames::with_prefix(&queue);
            let stage = chain::Stage::open(&url, role, queues, window, count).await;
            wait_for_go().await;
            return measured(stage.run()).await;
        }
        let kind = std::env::var(KIND_VAR)
            .ok()
            .and_then(|name| Kind::from_name(&name))
            .expect("the child's kind of messages");
        let messages = messages(kind, count);
        match mover.as_str() {
            "raw-lapin" => {
                let pair = raw_lapin::Pair::open(&url, &queue, window).await;
                wait_for_go().await;
                measured(pair.run(messages)).await
            }
            "raw-amqprs" => {
                let pair = raw_amqprs::Pair::open(&url, &queue, window).await;
                wait_for_go().await;
                measured(pair.run(messages)).await
            }
            "nnmon-broker" => {
                let pair = seam::Pair::open(&url, &queue, window).await;
                wait_for_go().await;
                measured(pair.run(messages)).await
            }
            other => panic!("no ceiling mover `{other}`"),
        }
    });
    println!("{} {} {cpu}", epoch_us(first), epoch_us(last));
    std::process::exit(0);
}

/// Says `ready` and waits until the parent says go, the client's tasks running meanwhile
/// (heartbeats). A parent gone before that (stdin closed) ends the child.
async fn wait_for_go() {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .expect("stdout");
    let go = tokio::task::spawn_blocking(|| {
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).map(|_| go)
    })
    .await
    .expect("the stdin reader")
    .expect("stdin");
    if go.trim() != "go" {
        eprintln!("ceiling child: no go from the bench; exiting");
        std::process::exit(1);
    }
}

/// Runs `work`, with this process's CPU seconds (all threads) it took.
async fn measured<T>(work: impl Future<Output = T>) -> (T, f64) {
    let before = own_cpu_s();
    let done = work.await;
    (done, own_cpu_s() - before)
}

/// User + system CPU seconds of this process so far, every thread, to the microsecond.
fn own_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn epoch_us(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
