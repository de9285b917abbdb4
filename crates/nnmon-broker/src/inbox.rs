use crate::client::{self, Connection};
use crate::{BrokerError, Delivery};

/// Deliveries from one queue on a channel of its own: its prefetch, its acks and its pace
/// belong to that queue alone, so a service can stop reading one queue (backpressure)
/// without its unread deliveries being acked along with another queue's.
pub struct Inbox {
    channel: client::ConsumeChannel,
    queue: String,
    /// The broker ended the consumer; deliveries before that were handed out first.
    cancelled: bool,
}

impl Inbox {
    pub(crate) async fn open(
        connection: &Connection,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self, BrokerError> {
        Ok(Self {
            channel: connection.consumer(queue, prefetch).await?,
            queue: queue.to_owned(),
            cancelled: false,
        })
    }

    /// The queue this inbox consumes.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Waits for at least one delivery, then takes every delivery already buffered.
    /// Deliveries complete in delivery-tag order, so afterwards no delivery with a lower tag
    /// than the batch's highest is left unread: acking that one with `multiple` (see
    /// [`ack`](Self::ack)) settles exactly this batch and earlier ones.
    ///
    /// Errors when the channel or connection fails, and when the broker cancels the
    /// consumer (its queue was deleted): the caller rebuilds the topology and consumers as
    /// after a lost connection, instead of going on without this queue.
    /// Deliveries received before the cancellation are still handed out (and can be
    /// acked): the error comes on the next call.
    ///
    /// Cancel-safe, as the services' `select!` loops need: the only await is for the first
    /// delivery, so a dropped call has taken nothing. Nothing may be awaited after that (a
    /// pause to gather a bigger batch, say): a call dropped there would lose the deliveries
    /// it holds, and the next `multiple` ack would settle them unhandled.
    pub async fn next_batch(&mut self) -> Result<Vec<Delivery>, BrokerError> {
        if self.cancelled {
            return Err(self.cancelled());
        }
        let first = self.channel.next().await.ok_or_else(|| self.cancelled())?;
        let mut batch = vec![first?];
        loop {
            match self.channel.try_next() {
                Some(Some(delivery)) => batch.push(delivery?),
                Some(None) => {
                    self.cancelled = true;
                    return Ok(batch);
                }
                None => return Ok(batch),
            }
        }
    }

    fn cancelled(&self) -> BrokerError {
        BrokerError::ConsumerCancelled {
            queue: self.queue.clone(),
        }
    }

    /// Acks every delivery of `batch`, and all earlier ones, in one frame.
    pub async fn ack(&self, batch: &[Delivery]) -> Result<(), BrokerError> {
        if let Some(newest) = batch.iter().max_by_key(|d| d.delivery_tag) {
            newest.acker.ack_multiple().await?;
        }
        Ok(())
    }

    /// Stops consuming; deliveries not yet acked go back to their queue.
    pub async fn close(self) -> Result<(), BrokerError> {
        self.channel.close().await?;
        Ok(())
    }
}
