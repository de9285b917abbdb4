//! The runner's own few words with the broker, outside the pipeline: publishing poison
//! messages (the `poison` fault), counting dead letters, deleting the run's queues, and
//! running `rabbitmqctl` (the `broker-restart` fault).

use anyhow::{Context, Result, bail};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

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
    let returned = channel.wait_for_confirms().await?;
    let _ = connection.close(200, "poison sent".into()).await;
    if !returned.is_empty() {
        bail!("{} poison messages came back unrouted", returned.len());
    }
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
/// rabbitmqctl`); an error says what it printed.
pub async fn rabbitmqctl(command: &[String], args: &[&str]) -> Result<()> {
    let (program, rest) = command.split_first().context("no rabbitmqctl command")?;
    let output = tokio::process::Command::new(program)
        .args(rest)
        .args(args)
        .output()
        .await
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
