//! Past one broker: a 3-node RabbitMQ cluster with quorum queues losing the node that leads
//! them, competing model replicas losing one to SIGKILL, a dead first node in the URL list,
//! and a queue of the wrong type.
//!
//! The cluster is `scripts/cluster`'s (nodes nnmon-c1..3@localhost on 127.0.0.1:5681–5683),
//! started here when it does not run yet (about 40 s) and left running for the next run
//! (`just cluster-down` removes it). Without it the cluster test is skipped, and fails
//! under CI. The other tests use the broker of `AMQP_URL`.
//!
//! `cargo test --test cluster -- --nocapture` prints the failover's figures.

mod common;

use common::{
    MINUTE, Pipeline, TestBroker, assert_exactly_the_confirmed_items, broker, run_script, skip,
};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// The cluster's nodes, as `scripts/cluster` names them.
const NODES: [&str; 3] = [
    "nnmon-c1@localhost",
    "nnmon-c2@localhost",
    "nnmon-c3@localhost",
];

/// The comma-separated AMQP URLs of the cluster's nodes, starting it when needed; `None`
/// (and skipped, or failed under CI) when it cannot run.
fn cluster() -> Option<&'static str> {
    static URLS: OnceLock<Result<String, String>> = OnceLock::new();
    let urls = URLS.get_or_init(|| {
        if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
            return Err("NNMON_SKIP_BROKER_TESTS=1".into());
        }
        let started = Instant::now();
        let stdout = run_script("cluster", &["start".as_ref()])?;
        eprintln!(
            "cluster ready in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            stdout.trim()
        );
        stdout
            .trim()
            .rsplit_once(": ")
            .map(|(_, urls)| urls.to_owned())
            .ok_or_else(|| format!("no URLs in `{stdout}`"))
    });
    match urls {
        Ok(urls) => Some(urls),
        Err(reason) => {
            skip(&format!("no RabbitMQ cluster: {reason}"));
            None
        }
    }
}

/// `rabbitmqctl`, as root: Debian's wrapper refuses other users (`sudo -n` when not root,
/// as for scripts/cluster).
fn rabbitmqctl_command() -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root {
        Command::new("rabbitmqctl")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "rabbitmqctl"]);
        sudo
    }
}

/// `rabbitmqctl -n NODE ARGS…`, its stdout; panics when it fails.
fn rabbitmqctl(node: &str, args: &[&str]) -> String {
    let output = rabbitmqctl_command()
        .args(["-q", "-n", node])
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl -n {node} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node leading most of the queues whose names start with `prefix`, asked of `ask`.
fn leader_of(prefix: &str, ask: &str) -> String {
    let listing = rabbitmqctl(
        ask,
        &["list_queues", "name", "leader", "--no-table-headers"],
    );
    let mut leaders: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, leader)| leader.trim())
        .collect();
    assert!(!leaders.is_empty(), "no queue {prefix}* in\n{listing}");
    leaders.sort_unstable();
    let most = leaders
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .expect("a leader");
    most[0].to_owned()
}

/// Starts a stopped node's app again when dropped, so that a failing test leaves the
/// cluster whole.
struct StoppedApp(String);

impl Drop for StoppedApp {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command()
            .args(["-q", "-n", &self.0, "start_app"])
            .status();
    }
}

/// Lines of the services' whole stderr files that contain `text`.
fn count_in_logs(pipeline: &Pipeline, text: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(pipeline.log_dir()) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "stderr"))
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .map(|text_of_one| text_of_one.lines().filter(|l| l.contains(text)).count())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_queues_lose_nothing_when_the_node_leading_them_stops() {
    const ITEMS: usize = 1_500;
    let Some(urls) = cluster() else { return };
    let mut pipeline = Pipeline::new(&TestBroker::at(urls), "cluster_leader");
    pipeline.set_env("NNMON_QUEUE_TYPE", "quorum");
    pipeline.set_env("NNMON_STATUS_INTERVAL", "1");
    pipeline.start("model", &["model"]);
    pipeline.start("metric", &["metric"]);
    // 100 items a second.
    pipeline.start_features(ITEMS, "0.01");
    pipeline.wait_for_rows(ITEMS / 4, MINUTE).await;

    let leader = leader_of(&pipeline.prefix, NODES[1]);
    let survivor = NODES
        .iter()
        .find(|&&node| node != leader)
        .expect("another node");
    let rows_before = pipeline.rows().len();
    eprintln!("stopping {leader}, which leads the queues, at row {rows_before}");
    let stopped_at = Instant::now();
    rabbitmqctl(&leader, &["stop_app"]);
    let stopped = StoppedApp(leader.clone());
    // The pipeline goes on without that node: 200 more rows before it comes back.
    pipeline.wait_for_rows(rows_before + 200, 2 * MINUTE).await;
    let resumed = stopped_at.elapsed();
    let new_leader = leader_of(&pipeline.prefix, survivor);
    assert_ne!(new_leader, leader, "the queues moved to a running node");
    rabbitmqctl(&leader, &["start_app"]);
    drop(stopped);

    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    assert_exactly_the_confirmed_items(&mut pipeline, ITEMS).await;
    eprintln!(
        "{ITEMS} items at 100/s on quorum queues: stopped {leader} at row {rows_before}; \
         200 more rows {:.1} s later, led by {new_leader}; every confirmed item exactly one \
         row; {} broker connections lost and rebuilt",
        resumed.as_secs_f64(),
        count_in_logs(&pipeline, "lost the broker; reconnecting"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_model_replicas_lose_nothing_when_one_is_killed() {
    const ITEMS: usize = 4_000;
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "model_replicas");
    // Status lines every second, so that each replica's count is known at the kill.
    pipeline.set_env("NNMON_STATUS_INTERVAL", "1");
    // Every item is queued before the replicas start: the one killed holds a full prefetch
    // window of unacked deliveries, which the broker must hand to the others.
    pipeline.start_features(ITEMS, "0");
    for replica in ["model-1", "model-2", "model-3"] {
        pipeline.start(replica, &["model"]);
    }
    pipeline.start("metric", &["metric"]);
    pipeline.wait_for_rows(ITEMS / 4, MINUTE).await;
    let survivors = ["model-1", "model-3"];
    let at_kill = pipeline.logs();
    pipeline.kill("model-2");
    let before: Vec<u64> = survivors
        .iter()
        .map(|replica| last_predicted(&at_kill, replica))
        .collect();
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    assert_exactly_the_confirmed_items(&mut pipeline, ITEMS).await;
    for replica in survivors {
        let status = pipeline.stop(replica, "TERM", MINUTE).await;
        assert!(status.success(), "{replica}: {status}");
    }
    let logs = pipeline.logs();
    let predicted: Vec<u64> = survivors
        .iter()
        .map(|replica| last_predicted(&logs, replica))
        .collect();
    // Both survivors took a share after the kill: competing consumers, not a standby.
    assert!(
        predicted.iter().zip(&before).all(|(after, at)| after > at),
        "a surviving replica predicted nothing after the kill: {before:?} then {predicted:?}\n{logs}"
    );
    eprintln!(
        "{ITEMS} items queued, model-2 of 3 killed at a quarter: survivors had predicted {before:?}, then {predicted:?}"
    );
}

/// The last "N items predicted" of `replica`'s status lines in `logs`.
fn last_predicted(logs: &str, replica: &str) -> u64 {
    let section = logs
        .split("--- ")
        .find(|section| {
            section
                .lines()
                .next()
                .is_some_and(|l| l.contains(&format!("{replica}.stderr")))
        })
        .unwrap_or_default();
    section
        .lines()
        .filter_map(|line| line.split_once(" items predicted"))
        .filter_map(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_does_not_answer_is_skipped_for_the_next_in_the_list() {
    const ITEMS: usize = 300;
    let Some(broker) = broker().await else { return };
    // Port 1: nothing listens there.
    let urls = format!("amqp://guest:guest@127.0.0.1:1/%2f,{}", broker.url);
    let mut pipeline = Pipeline::new(&TestBroker::at(&urls), "url_list");
    pipeline.start_stream(ITEMS);
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    assert_exactly_the_confirmed_items(&mut pipeline, ITEMS).await;
    assert!(
        count_in_logs(&pipeline, "broker node not reachable; trying the next one") >= 3,
        "{}",
        pipeline.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_of_the_other_type_is_refused_naming_it() {
    let Some(broker) = broker().await else { return };
    let pipeline = Pipeline::new(&broker, "queue_type");
    let connection = pipeline.connect().await;
    common::declare_durable(&connection, &pipeline.queues.features).await;
    let _ = connection.close(200, "done".into()).await;
    let status = pipeline
        .run("model", &["model", "--queue-type", "quorum"], MINUTE)
        .await;
    assert_eq!(status.code(), Some(1), "{}", pipeline.logs());
    let logs = pipeline.logs();
    assert!(
        logs.contains(&format!(
            "queue {} already exists on the broker, but not as a quorum queue",
            pipeline.queues.features
        )) && logs.contains("--queue-type"),
        "{logs}"
    );
    // The other way round: a service left at the default refuses quorum queues.
    let quorum = Pipeline::new(&broker, "queue_type_q");
    let status = quorum
        .run(
            "features",
            &[
                "features",
                "--queue-type",
                "quorum",
                "--count",
                "1",
                "--delay",
                "0",
            ],
            MINUTE,
        )
        .await;
    assert!(status.success(), "{}", quorum.logs());
    let status = quorum.run("metric", &["metric"], MINUTE).await;
    assert_eq!(status.code(), Some(1), "{}", quorum.logs());
    assert!(
        quorum.logs().contains("but not as a classic queue"),
        "{}",
        quorum.logs()
    );
}
