//! The runner's own few words with the broker, outside the pipeline: publishing poison
//! messages (the `poison` fault), counting dead letters, deleting the run's queues, and
//! running `rabbitmqctl` (the `broker-restart` fault).

use anyhow::{Context, Result, bail};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The first URL of a comma-separated list.
fn first(url: &str) -> &str {
    url.split(',').next().unwrap_or(url).trim()
}

async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(
        first(url),
        ConnectionProperties::default().with_connection_name("nnmon-scenario".into()),
    )
    .await
    .context("connecting to the broker")
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

/// Publishes `count` poison messages, alternately to `features` and `y_true`, and waits
/// for the broker to confirm them all.
pub async fn publish_poison(url: &str, queues: [&str; 2], count: u64) -> Result<()> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for index in 0..count {
        let queue = queues[(index % 2) as usize];
        // Confirms are collected all at once by `wait_for_confirms`.
        drop(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &poison_body(index),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
        );
    }
    // Not mandatory: nothing comes back unrouted.
    channel.wait_for_confirms().await?;
    let _ = connection.close(200, "poison sent".into()).await;
    Ok(())
}

/// Messages ready in `queue` (nobody consumes the dead-letter queue).
pub async fn depth(url: &str, queue: &str) -> Result<u32> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let depth = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .with_context(|| format!("asking for the depth of {queue}"))?
        .message_count();
    let _ = connection.close(200, "done".into()).await;
    Ok(depth)
}

/// Deletes the run's queues (best effort: a queue already gone is fine).
pub async fn delete_queues(url: &str, queues: &[&str]) -> Result<()> {
    let connection = connect(url).await?;
    for queue in queues {
        let channel = connection.create_channel().await?;
        let _ = channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Runs `rabbitmqctl <args>` as `command` says (`rabbitmqctl`, or e.g. `docker exec NAME
/// rabbitmqctl`); an error says what it printed. Blocking: it runs on the thread of a
/// [`BrokerRestart`], which must outlive the async runtime.
pub fn rabbitmqctl(command: &[String], args: &[&str]) -> Result<()> {
    let (program, rest) = command.split_first().context("no rabbitmqctl command")?;
    let output = std::process::Command::new(program)
        .args(rest)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            command.join(" "),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
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
