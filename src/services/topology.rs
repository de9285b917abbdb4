//! The pipeline's exchanges and queues, which every broker service declares whichever
//! starts first (so that no message is published to a queue that does not exist yet):
//! the seed's queues on the default exchange with `--shards 1`, and with `--shards N`
//! the sharded routing of [`ShardNames`] beside `features` and `dead_letter`.

use anyhow::{Context, Result};
use nnmon_broker::{Broker, BrokerError, ExchangeKind, Publisher, QueueType};
use nnmon_proto::{QueueNames, ShardNames};
use tracing::info;

/// The weight of every shard on the consistent-hash router: shards are equal.
const SHARD_WEIGHT: &str = "1";

pub struct Topology {
    pub queues: QueueNames,
    /// `None` with one shard: the seed's topology, unchanged.
    pub shards: Option<ShardNames>,
}

impl Topology {
    pub fn new(prefix: &str, shards: u16) -> Self {
        Self {
            queues: QueueNames::with_prefix(prefix),
            shards: (shards > 1).then(|| ShardNames::new(prefix, shards)),
        }
    }

    /// Declares the whole pipeline. Sharded, the shards are bound to the router in the
    /// order of their numbers (which is also their names' sorted order, the order the
    /// plugin rebuilds its ring in at boot), each once its queues are bound, so that the
    /// router never picks a shard that cannot take a message yet. The router carries the
    /// shard count ([`ShardNames::router_marker`]): a service with another `--shards`
    /// gets [`ExchangeError::Inequivalent`](nnmon_broker::ExchangeError) and exits.
    /// Queues are of `queue_type`.
    pub async fn declare(&self, broker: &Broker, queue_type: QueueType) -> Result<()> {
        let queues = &self.queues;
        let Some(shards) = &self.shards else {
            return super::declare_topology(broker, queues, queue_type).await;
        };
        broker
            .declare_queues(&[&queues.features, &queues.dead_letter], queue_type)
            .await
            .context("declaring the pipeline's queues")?;
        broker
            .declare_exchange(
                &shards.router,
                ExchangeKind::ConsistentHash,
                Some(&shards.router_marker()),
            )
            .await?;
        for shard in 0..shards.count() {
            let exchange = shards.shard_exchange(shard);
            broker
                .declare_exchange(&exchange, ExchangeKind::Direct, None)
                .await?;
            for (queue, routing_key) in [
                (shards.y_true(shard), &queues.y_true),
                (shards.y_pred(shard), &queues.y_pred),
            ] {
                broker
                    .declare_queue(&queue, queue_type)
                    .await
                    .with_context(|| format!("declaring {queue}"))?;
                broker.bind_queue(&queue, &exchange, routing_key).await?;
            }
            broker
                .bind_exchange(&exchange, &shards.router, SHARD_WEIGHT)
                .await?;
        }
        broker
            .declare_exchange(&shards.rows, ExchangeKind::Fanout, None)
            .await?;
        broker
            .declare_queue(&shards.rows_plot, queue_type)
            .await
            .with_context(|| format!("declaring {}", shards.rows_plot))?;
        broker
            .bind_queue(&shards.rows_plot, &shards.rows, "")
            .await?;
        info!(
            shards = shards.count(),
            router = %shards.router,
            "sharded topology declared"
        );
        Ok(())
    }

    /// Publishes a true value (`queue`: [`QueueNames::y_true`]) or a prediction
    /// ([`QueueNames::y_pred`]): to that queue, or through the router to its ID's shard.
    pub async fn publish_half<T>(
        &self,
        publisher: &mut Publisher<T>,
        queue: &str,
        body: &[u8],
        properties: nnmon_broker::Properties,
        token: T,
    ) -> Result<(), BrokerError> {
        match &self.shards {
            None => publisher.publish(queue, body, properties, token).await,
            Some(shards) => {
                publisher
                    .publish_to(&shards.router, queue, body, properties, token)
                    .await
            }
        }
    }

    /// The true values' and the predictions' queues of metric shard `shard`.
    pub fn metric_inputs(&self, shard: u16) -> (String, String) {
        match &self.shards {
            None => (self.queues.y_true.clone(), self.queues.y_pred.clone()),
            Some(shards) => (shards.y_true(shard), shards.y_pred(shard)),
        }
    }
}
