//! `nnmon model`: the transform. Predicts every feature vector and publishes the
//! prediction, under the same ID, to `y_pred`; watches the inputs for drift on the way.
//!
//! A features message is acked only after its prediction (or, for a poison message, its
//! dead-letter copy) is confirmed by the broker. Every delivery yields exactly one publish,
//! in delivery order, and confirms arrive in publish order, so one ack with `multiple`
//! settles everything up to the latest confirmed delivery.
//!
//! Input drift: every feature vector also goes to a [`FeatureDrift`] detector (each
//! feature of the recent window against the training data). An alarm raised or cleared is
//! logged once; the scores go to Prometheus and to `<log-dir>/feature_drift.json` for
//! `plot`'s page.
//!
//! Model swap (`--swap-model FILE --swap-at-item N`): items numbered N or higher (the
//! `item` number features puts in each message) are predicted by the
//! second model, earlier ones by the first, whatever order they arrive in and however
//! often they are redelivered — the swap lands on item N exactly, with no restart.

use crate::cli::ModelArgs;
use crate::services::{PoisonCounter, Topology, dead_letter, now_ms};
use crate::supervisor::supervise;
use crate::telemetry::{StatusClock, StatusFile, Telemetry};
use anyhow::{Context, Result};
use nnmon_broker::{Acker, Broker, Delivery, Publisher, message_properties};
use nnmon_model::{LinearModel, diabetes};
use nnmon_observe::{Counter, FeatureLabels};
use nnmon_proto::{DecodeError, FEATURE_COUNT, FeaturesMessage, ValueMessage};
use nnmon_stats::{
    DIABETES_FEATURE_NAMES, FEATURE_DRIFT_FILE, FeatureDrift, FeatureDriftConfig,
    FeatureDriftReport,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a confirm settles: the features message to ack, and the features it was
/// predicted from (none for a dead-letter copy). They reach the drift detector only once
/// settled, so that a message redelivered after a reconnect is counted once.
struct Settled {
    acker: Acker,
    features: Option<[f64; FEATURE_COUNT]>,
    /// The item's number, if its message carries one.
    item: Option<u64>,
}

/// The second model and the first item it predicts.
struct Swap {
    model: LinearModel,
    at_item: u64,
    source: String,
    /// Whether an item at or past `at_item` has been predicted (logged once).
    reached: bool,
}

/// Everything a delivery goes through, kept across reconnections.
struct Predictor {
    model: LinearModel,
    swap: Option<Swap>,
    topology: Topology,
    poison: PoisonCounter,
    drift: FeatureDrift,
    telemetry: Telemetry,
    consumed: Counter,
    /// Confirmed predictions, and confirmed dead-letter copies.
    published: Counter,
    dead_letters_published: Counter,
    /// `feature_drift.json`, written off the event loop (see [`StatusFile`]).
    drift_file: StatusFile,
    /// Features messages settled (acked).
    settled: u64,
}

pub async fn run(args: ModelArgs, cancel: CancellationToken) -> Result<()> {
    let (model, source) = match &args.coefficients {
        Some(path) => (LinearModel::load(path)?, path.display().to_string()),
        None => (
            LinearModel::default_ols().context("the built-in model")?,
            "built-in OLS".to_owned(),
        ),
    };
    info!(intercept = model.intercept, %source, "model loaded");
    let swap = match (&args.swap_model, args.swap_at_item) {
        (Some(path), Some(at_item)) => {
            let model = LinearModel::load(path)
                .with_context(|| format!("--swap-model {}", path.display()))?;
            let source = path.display().to_string();
            info!(intercept = model.intercept, %source, at_item, "second model loaded: it predicts items {at_item} and later");
            Some(Swap {
                model,
                at_item,
                source,
                reached: false,
            })
        }
        // clap makes each flag require the other.
        _ => None,
    };
    let log_dir = &args.logs.log_dir;
    std::fs::create_dir_all(log_dir)
        .with_context(|| format!("creating the log folder {}", log_dir.display()))?;
    let telemetry = Telemetry::start(nnmon_observe::Service::Model, &args.observe, &cancel).await?;
    let topology = Topology::new(&args.broker.queue_prefix, args.shards.shards);
    let queues = &topology.queues;
    let reference: Vec<_> = diabetes().iter().map(|sample| sample.features).collect();
    let drift = FeatureDrift::new(
        &reference,
        DIABETES_FEATURE_NAMES,
        FeatureDriftConfig {
            window: args.drift_window,
            ..FeatureDriftConfig::default()
        },
    );
    let mut predictor = Predictor {
        model,
        swap,
        poison: PoisonCounter::new(telemetry.metrics.clone()),
        consumed: telemetry.metrics.consumed(&queues.features),
        published: telemetry.metrics.published(&queues.y_pred),
        dead_letters_published: telemetry.metrics.published(&queues.dead_letter),
        topology,
        drift,
        telemetry: telemetry.clone(),
        drift_file: StatusFile::new(log_dir.join(FEATURE_DRIFT_FILE))?,
        settled: 0,
    };
    let prefetch = args.broker.prefetch;
    let mut status = StatusClock::new(args.observe.status_interval);
    supervise(
        "nnmon-model",
        &args.broker.amqp_url,
        &cancel,
        &telemetry,
        async |broker: &Broker| {
            let topology = &predictor.topology;
            topology.declare(broker, args.broker.queue_type).await?;
            let queues = &topology.queues;
            let mut publisher = broker.publisher::<Settled>(usize::from(prefetch)).await?;
            let mut inbox = broker.inbox(&queues.features, prefetch).await?;
            telemetry.health.set(true);
            let mut ticks = tokio::time::interval(args.observe.status_interval);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    confirmed = publisher.confirmed(), if publisher.in_flight() > 0 => {
                        let mut settled = vec![confirmed?];
                        settled.extend(publisher.ready()?);
                        predictor.settle(settled).await?;
                    }
                    batch = inbox.next_batch(), if !publisher.is_full() => {
                        for delivery in batch? {
                            predictor.predict(&mut publisher, delivery).await?;
                        }
                    }
                    _ = ticks.tick() => predictor.report(&mut status, false)?,
                }
            }
            // Shutdown: stop taking work, let what is in flight land, ack it.
            let settled = publisher.drain().await?;
            predictor.settle(settled).await?;
            inbox.close().await?;
            publisher.close().await?;
            Ok(())
        },
    )
    .await?;
    predictor.report(&mut status, true)?;
    Ok(())
}

impl Predictor {
    async fn predict(
        &mut self,
        publisher: &mut Publisher<Settled>,
        delivery: Delivery,
    ) -> Result<()> {
        let message = match FeaturesMessage::decode(&delivery.data) {
            Ok(message) => message,
            Err(error) => return self.reject(publisher, delivery, error).await,
        };
        let item = message.item;
        let model = match (&mut self.swap, item) {
            (Some(swap), Some(item)) if item >= swap.at_item => {
                if !swap.reached {
                    swap.reached = true;
                    info!(
                        swap_at_item = swap.at_item,
                        item,
                        "model swap: items from {} on are predicted by {}",
                        swap.at_item,
                        swap.source
                    );
                }
                &swap.model
            }
            _ => &self.model,
        };
        let prediction = ValueMessage {
            value: model.predict(&message.features),
            id: message.id,
            published_us: message.published_us,
        };
        let Ok(body) = prediction.encode() else {
            // Finite but extreme features can overflow the dot product to infinity.
            return self
                .reject(publisher, delivery, DecodeError::NonFinite)
                .await;
        };
        let properties = message_properties(prediction.id.as_str());
        let settled = Settled {
            acker: delivery.acker,
            features: Some(message.features),
            item,
        };
        let y_pred = &self.topology.queues.y_pred;
        self.topology
            .publish_half(publisher, y_pred, &body, properties, settled)
            .await?;
        Ok(())
    }

    async fn reject(
        &mut self,
        publisher: &mut Publisher<Settled>,
        delivery: Delivery,
        error: DecodeError,
    ) -> Result<()> {
        self.poison.record(&self.topology.queues.features, &error);
        let settled = Settled {
            acker: delivery.acker.clone(),
            features: None,
            item: None,
        };
        dead_letter(publisher, &self.topology.queues, &delivery, &error, settled).await
    }

    /// Acks, in one frame, the features messages whose outputs were confirmed, and feeds
    /// their features to the drift detector.
    async fn settle(&mut self, settled: Vec<Settled>) -> Result<()> {
        let count = settled.len() as u64;
        let mut predicted = 0;
        for settle in &settled {
            if let Some(features) = &settle.features {
                predicted += 1;
                self.watch_drift(features, settle.item);
            }
        }
        if let Some(newest) = settled.into_iter().next_back() {
            newest.acker.ack_multiple().await?;
        }
        self.settled += count;
        self.consumed.inc_by(count);
        self.published.inc_by(predicted);
        self.dead_letters_published.inc_by(count - predicted);
        Ok(())
    }

    /// `item` is the features' own number, which the alarm line gives (the detector's
    /// count restarts with the service; the number does not); without one, the count.
    fn watch_drift(&mut self, features: &[f64; FEATURE_COUNT], item: Option<u64>) {
        for flip in self.drift.push(features) {
            let item = item.unwrap_or(flip.item);
            if flip.alarm {
                warn!(
                    feature = flip.subject,
                    item, "input drift: {} no longer looks like the training data", flip.subject
                );
            } else {
                info!(
                    feature = flip.subject,
                    item,
                    "input drift cleared: {} looks like the training data again",
                    flip.subject
                );
            }
        }
    }

    /// Updates the drift gauges and `feature_drift.json`, and logs a progress line, when
    /// one is due (or `last`).
    fn report(&mut self, status: &mut StatusClock, last: bool) -> Result<()> {
        let Some(rate) = status.due(self.settled, last) else {
            return Ok(());
        };
        let scores = self.drift.scores();
        let metrics = &self.telemetry.metrics;
        for score in &scores {
            let labels = FeatureLabels {
                feature: score.name.clone(),
            };
            metrics
                .feature_drift_score
                .get_or_create(&labels)
                .set(score.statistic);
            metrics
                .feature_drift_alarm
                .get_or_create(&labels)
                .set(i64::from(score.alarm));
        }
        let report = FeatureDriftReport {
            updated_ms: now_ms(),
            items: self.drift.items(),
            window: self.drift.config().window,
            features: scores.clone(),
        };
        // The page's copy, written off the event loop; the last one before `model` exits.
        if last {
            self.drift_file.write_and_wait(&report);
        } else {
            self.drift_file.write(&report);
        }
        let alarms: Vec<&str> = scores
            .iter()
            .filter(|s| s.alarm)
            .map(|s| s.name.as_str())
            .collect();
        let drift = match (scores.is_empty(), alarms.is_empty()) {
            (true, _) => "not tested yet (window filling)".to_owned(),
            (false, true) => "none".to_owned(),
            (false, false) => format!("ALARM on {}", alarms.join(", ")),
        };
        let done = if last { "model stopped: " } else { "" };
        info!(
            "{done}{} items predicted ({rate:.0}/s); input drift: {drift}; {} dead-lettered",
            self.settled,
            self.poison.total()
        );
        Ok(())
    }
}
