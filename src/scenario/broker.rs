//! The runner's own few words with the broker, outside the pipeline: publishing poison
//! messages (the `poison` fault), counting dead letters, deleting the run's queues — over
//! nnmon-broker's connection (the URL list, TLS, refusals as the services get them) — and
//! running `rabbitmqctl` (the `broker-restart` fault).

use anyhow::{Context, Result, anyhow, bail};
use nnmon_broker::{Broker, BrokerUrls, Properties, RetryPolicy};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the runner tries to reach the broker before giving up (it was up when the
/// run started; a restart fault is over by the time these are called).
const REACH_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the first node of `urls` that answers, TLS as the URLs say.
async fn connect(urls: &BrokerUrls) -> Result<Broker> {
    let never = CancellationToken::new();
    let connecting = Broker::connect(urls, 0, "nnmon-scenario", RetryPolicy::default(), &never);
    tokio::time::timeout(REACH_TIMEOUT, connecting)
        .await
        .with_context(|| format!("the broker did not answer within {REACH_TIMEOUT:?}"))?
        .context("connecting to the broker")?
        .context("connecting to the broker was cancelled")
}

/// Bodies no service can process, each with a different flaw.
fn poison_body(index: u64) -> Vec<u8> {
    match index % 4 {
        0 => b"not json at all".to_vec(),
        1 => br#"{"id": "", "body": 1.5}"#.to_vec(),
        2 => br#"{"id": "x", "body": {"nested": true}}"#.to_vec(),
        _ => format!(r#"{{"id": "{}", "body": 1.5}}"#, "i".repeat(300)).into_bytes(),
    }
}

/// Poison messages in flight at once, awaiting the broker's confirms.
const POISON_WINDOW: usize = 500;

/// Publishes `count` poison messages, alternately to `features` and `y_true`, and waits
/// for the broker to confirm them all.
pub async fn publish_poison(urls: &BrokerUrls, queues: [&str; 2], count: u64) -> Result<()> {
    let broker = connect(urls).await?;
    let mut publisher = broker.publisher::<()>(POISON_WINDOW).await?;
    for index in 0..count {
        if publisher.is_full() {
            publisher.confirmed().await?;
        }
        let queue = queues[(index % 2) as usize];
        let properties = Properties::default().with_delivery_mode(2);
        publisher
            .publish(queue, &poison_body(index), properties, ())
            .await?;
    }
    publisher.drain().await?;
    publisher.close().await?;
    broker.close().await;
    Ok(())
}

/// At a run's end, on one connection (a dead broker costs one wait, not two): the
/// messages ready in `dead_letter` (nobody consumes it), then the run's queues deleted (a
/// queue already gone is fine).
pub async fn count_and_delete(
    urls: &BrokerUrls,
    dead_letter: &str,
    queues: &[&str],
) -> (Result<u32>, Result<()>) {
    let broker = match connect(urls).await {
        Ok(broker) => broker,
        Err(error) => {
            let error = format!("{error:#}");
            return (Err(anyhow!("{error}")), Err(anyhow!("{error}")));
        }
    };
    let depth = broker
        .queue_depth(dead_letter)
        .await
        .with_context(|| format!("asking for the depth of {dead_letter}"));
    let mut failed = Vec::new();
    for queue in queues {
        if let Err(error) = broker.delete_queue(queue).await {
            failed.push(format!("{queue}: {error:#}"));
        }
    }
    broker.close().await;
    let deleted = if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("deleting {}", failed.join("; ")))
    };
    (depth, deleted)
}

/// How long one `rabbitmqctl` call may take (`await_startup` included) before it is
/// killed: a hung CLI must not hang the run.
const RABBITMQCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `rabbitmqctl <args>` as `command` says (`rabbitmqctl`, or e.g. `docker exec NAME
/// rabbitmqctl`); an error says what it printed. Blocking: it runs on the thread of a
/// [`BrokerRestart`], which must outlive the async runtime.
pub fn rabbitmqctl(command: &[String], args: &[&str]) -> Result<()> {
    let (program, rest) = command.split_first().context("no rabbitmqctl command")?;
    let mut child = std::process::Command::new(program)
        .args(rest)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    // stderr is read on a thread of its own, so a chatty CLI cannot block on a full pipe
    // while this one waits for it to exit.
    let mut stderr = child.stderr.take().context("rabbitmqctl's stderr")?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + RABBITMQCTL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{} {}` did not finish within {RABBITMQCTL_TIMEOUT:?}",
                command.join(" "),
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`{} {}` failed ({status}): {}",
            command.join(" "),
            args.join(" "),
            stderr.trim()
        );
    }
    Ok(())
}

/// How many times `start_app` is tried before the restart is called failed.
const START_ATTEMPTS: u32 = 5;
/// The pause between two tries of `start_app`.
const START_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// A `broker-restart` fault in progress: `stop_app`, the pause, then `start_app` (retried)
/// and `await_startup`, on a thread of its own. Dropping it cuts the pause short and
/// waits until the app has been started again, so no way out of the runner (an error,
/// Ctrl-C, the shutdown deadline dropping the run, a panic) leaves the broker stopped.
pub struct BrokerRestart {
    /// Dropped to end the pause early.
    hurry: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BrokerRestart {
    /// Stops the app of the broker `command` reaches for `down`; `starting` is called
    /// before `start_app`, `done` with the outcome once the app is up (or given up on).
    pub fn start(
        command: Vec<String>,
        down: Duration,
        starting: impl FnOnce() + Send + 'static,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<Self> {
        let (hurry, pause) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("broker-restart".into())
            .spawn(move || {
                // A failed stop_app may still have stopped part of the app: start it anyway.
                let stopped = rabbitmqctl(&command, &["stop_app"]);
                // Ends early once the sender is dropped (nothing is ever sent).
                let _ = pause.recv_timeout(down);
                starting();
                done(stopped.and(start_app(&command)));
            })
            .context("starting the broker-restart thread")?;
        Ok(Self {
            hurry: Some(hurry),
            thread: Some(thread),
        })
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        drop(self.hurry.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `start_app` until it succeeds (at most [`START_ATTEMPTS`] times), then `await_startup`.
fn start_app(command: &[String]) -> Result<()> {
    let mut attempt = 1;
    loop {
        match rabbitmqctl(command, &["start_app"])
            .and_then(|()| rabbitmqctl(command, &["await_startup"]))
        {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= START_ATTEMPTS => {
                return Err(error.context(format!(
                    "the broker app did not start after {START_ATTEMPTS} tries"
                )));
            }
            Err(error) => {
                tracing::warn!("starting the broker app again (try {attempt}): {error:#}");
                attempt += 1;
                thread::sleep(START_RETRY_PAUSE);
            }
        }
    }
}
