//! `nnmon model`: the transform. Predicts every feature vector and publishes the
//! prediction, under the same ID, to `y_pred`.
//!
//! A features message is acked only after its prediction (or, for a poison message, its
//! dead-letter copy) is confirmed by the broker. Every delivery yields exactly one publish,
//! in delivery order, and confirms arrive in publish order, so one ack with `multiple`
//! settles everything up to the latest confirmed delivery.

use crate::cli::ModelArgs;
use crate::services::{PoisonCounter, dead_letter, declare_topology};
use crate::supervisor::supervise;
use anyhow::{Context, Result};
use nnmon_broker::{Acker, BasicAckOptions, Broker, Delivery, Publisher, message_properties};
use nnmon_model::LinearModel;
use nnmon_proto::{DecodeError, FeaturesMessage, QueueNames, ValueMessage};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub async fn run(args: ModelArgs, cancel: CancellationToken) -> Result<()> {
    let (model, source) = match &args.coefficients {
        Some(path) => (LinearModel::load(path)?, path.display().to_string()),
        None => (
            LinearModel::default_ols().context("the built-in model")?,
            "built-in OLS".to_owned(),
        ),
    };
    info!(intercept = model.intercept, %source, "model loaded");
    let queues = QueueNames::with_prefix(&args.broker.queue_prefix);
    let prefetch = args.broker.prefetch;
    let mut poison = PoisonCounter::default();
    supervise(
        "nnmon-model",
        &args.broker.amqp_url,
        &cancel,
        async |broker: &Broker| {
            declare_topology(broker, &queues).await?;
            let mut publisher = broker.publisher::<Acker>(usize::from(prefetch)).await?;
            let mut inbox = broker.inbox(&queues.features, prefetch).await?;
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    confirmed = publisher.confirmed(), if publisher.in_flight() > 0 => {
                        let mut newest = confirmed?;
                        if let Some(later) = publisher.ready()?.pop() {
                            newest = later;
                        }
                        newest.ack(BasicAckOptions { multiple: true }).await?;
                    }
                    batch = inbox.next_batch(), if !publisher.is_full() => {
                        for delivery in batch? {
                            predict(&model, &queues, &mut publisher, &mut poison, delivery).await?;
                        }
                    }
                }
            }
            // Shutdown: stop taking work, let what is in flight land, ack it.
            if let Some(newest) = publisher.drain().await?.pop() {
                newest.ack(BasicAckOptions { multiple: true }).await?;
            }
            inbox.close().await?;
            publisher.close().await?;
            Ok(())
        },
    )
    .await?;
    info!(poison = poison.total(), "model stopped");
    Ok(())
}

async fn predict(
    model: &LinearModel,
    queues: &QueueNames,
    publisher: &mut Publisher<Acker>,
    poison: &mut PoisonCounter,
    delivery: Delivery,
) -> Result<()> {
    let message = match FeaturesMessage::decode(&delivery.data) {
        Ok(message) => message,
        Err(error) => return reject(queues, publisher, poison, delivery, error).await,
    };
    let prediction = ValueMessage {
        value: model.predict(&message.features),
        id: message.id,
        published_us: message.published_us,
    };
    let Ok(body) = prediction.encode() else {
        // Finite but extreme features can overflow the dot product to infinity.
        return reject(queues, publisher, poison, delivery, DecodeError::NonFinite).await;
    };
    let properties = message_properties(prediction.id.as_str());
    publisher
        .publish(&queues.y_pred, &body, properties, delivery.acker)
        .await?;
    Ok(())
}

async fn reject(
    queues: &QueueNames,
    publisher: &mut Publisher<Acker>,
    poison: &mut PoisonCounter,
    delivery: Delivery,
    error: DecodeError,
) -> Result<()> {
    poison.record(&queues.features, &error);
    let acker = delivery.acker.clone();
    dead_letter(publisher, queues, &delivery, &error, acker).await
}
