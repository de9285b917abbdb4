/// The names of a sharded pipeline (`--shards N`, N > 1), after the pipeline's prefix.
///
/// Both halves of an item go to ONE consistent-hash exchange, `<prefix>shards`, which
/// hashes the message's `message_id` property and picks shard I's direct exchange
/// `<prefix>shard-IIII`; that one routes by routing key (the seed's queue name, with the
/// prefix) to `<prefix>y_true.shard-IIII` or `<prefix>y_pred.shard-IIII`. `IIII` is the
/// shard's number in [`SHARD_DIGITS`] digits, zero-padded (`shard-0007`).
///
/// Why one hash exchange with a direct exchange per shard, rather than one hash exchange
/// per side bound straight to the shard queues: the plugin numbers its buckets in the
/// order the bindings were made, and a deleted binding renumbers those after it. Two
/// rings (one per side) would agree only while their bindings were made in the same
/// order; deleting and redeclaring one shard queue would reorder one ring, and from then
/// on the two halves of most IDs would reach different shards. With one ring both halves
/// always take the same bucket, whatever happens to the queues; the shard exchanges are
/// never deleted with a queue.
///
/// Why zero-padded numbers: the plugin keeps its ring in memory and, when the broker
/// boots, rebuilds it from the bindings sorted by destination name. Unpadded, `shard-10`
/// sorts before `shard-2`, so with 11 shards or more a restart would renumber the buckets
/// and send the halves of an item that straddled it to different shards. Padded, the
/// sorted order is the order of the numbers, which is the order the bindings are made in
/// (see `Topology::declare`), so the ring after a restart is the ring before it.
///
/// The router also names the shard count, in its `alternate-exchange` argument (see
/// [`router_marker`](Self::router_marker)), so that services started with different
/// `--shards` cannot share it.///
/// Each shard also publishes its rows to the fanout exchange `<prefix>rows`; `plot`
/// consumes them from its queue `<prefix>rows.plot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardNames {
    prefix: String,
    count: u16,
    /// `<prefix>shards`: the consistent-hash exchange (`x-consistent-hash`, hashing the
    /// `message_id` property) that truths and predictions are published to.
    pub router: String,
    /// `<prefix>rows`: the fanout exchange every shard publishes its rows to.
    pub rows: String,
    /// `<prefix>rows.plot`: `plot`'s queue on [`rows`](Self::rows).
    pub rows_plot: String,
}

/// The most shards a pipeline may have: each is two queues and an exchange, and more
/// shards than broker cores buys nothing.
pub const MAX_SHARDS: u16 = 1024;

/// The digits of a shard's number in its names: enough for [`MAX_SHARDS`] - 1.
pub const SHARD_DIGITS: usize = 4;

impl ShardNames {
    /// The names for `count` shards of the pipeline whose names start with `prefix`.
    pub fn new(prefix: &str, count: u16) -> Self {
        Self {
            prefix: prefix.to_owned(),
            count,
            router: format!("{prefix}shards"),
            rows: format!("{prefix}rows"),
            rows_plot: format!("{prefix}rows.plot"),
        }
    }

    /// How many shards there are.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The router's `alternate-exchange` argument: `<prefix>shards.of-N`, an exchange
    /// nobody declares (so an unroutable message stays unroutable and comes back to a
    /// `mandatory` publisher, as without it). RabbitMQ compares this argument when an
    /// exchange is declared again, and refuses a different one (406 PRECONDITION_FAILED),
    /// unlike arguments of its own choosing, which it ignores (checked on RabbitMQ 3.10):
    /// a service started with another `--shards` is refused at once.
    pub fn router_marker(&self) -> String {
        format!("{}.of-{}", self.router, self.count)
    }

    /// Shard `shard`'s direct exchange, bound to the router with weight 1.
    pub fn shard_exchange(&self, shard: u16) -> String {
        format!("{}shard-{}", self.prefix, shard_number(shard))
    }

    /// Shard `shard`'s queue of true values.
    pub fn y_true(&self, shard: u16) -> String {
        format!("{}y_true.shard-{}", self.prefix, shard_number(shard))
    }

    /// Shard `shard`'s queue of predictions.
    pub fn y_pred(&self, shard: u16) -> String {
        format!("{}y_pred.shard-{}", self.prefix, shard_number(shard))
    }

    /// Every queue of the sharded part: the shards' queues, then `plot`'s.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = (0..self.count)
            .flat_map(|shard| [self.y_true(shard), self.y_pred(shard)])
            .collect();
        queues.push(self.rows_plot.clone());
        queues
    }

    /// Every exchange of the sharded part: the router, the shards' and the rows'.
    pub fn exchanges(&self) -> Vec<String> {
        let mut exchanges = vec![self.router.clone()];
        exchanges.extend((0..self.count).map(|shard| self.shard_exchange(shard)));
        exchanges.push(self.rows.clone());
        exchanges
    }
}

/// A shard's number as its names spell it: [`SHARD_DIGITS`] digits, zero-padded.
fn shard_number(shard: u16) -> String {
    format!("{shard:0width$}", width = SHARD_DIGITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueNames;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn names_of_two_shards() {
        let names = ShardNames::new("run42.", 2);
        assert_eq!(
            names.queues(),
            [
                "run42.y_true.shard-0000",
                "run42.y_pred.shard-0000",
                "run42.y_true.shard-0001",
                "run42.y_pred.shard-0001",
                "run42.rows.plot"
            ]
        );
        assert_eq!(
            names.exchanges(),
            [
                "run42.shards",
                "run42.shard-0000",
                "run42.shard-0001",
                "run42.rows"
            ]
        );
        assert_eq!(names.router_marker(), "run42.shards.of-2");
        assert_ne!(
            names.router_marker(),
            ShardNames::new("run42.", 3).router_marker()
        );
    }

    #[test]
    fn the_largest_shard_number_fits_the_digits() {
        let names = ShardNames::new("", MAX_SHARDS);
        assert_eq!(names.shard_exchange(MAX_SHARDS - 1), "shard-1023");
        assert_eq!(names.shard_exchange(0).len(), "shard-1023".len());
    }

    proptest! {
        /// No two names of one pipeline are equal, none is one of the unsharded queues,
        /// and every one starts with the prefix (so pipelines never share one).
        #[test]
        fn names_are_distinct_and_prefixed(prefix in "[a-z0-9.]{0,12}", count in 1..64u16) {
            let names = ShardNames::new(&prefix, count);
            let queues = names.queues();
            let unique: HashSet<&String> = queues.iter().collect();
            prop_assert_eq!(unique.len(), queues.len());
            prop_assert_eq!(queues.len(), 2 * usize::from(count) + 1);
            let seed = QueueNames::with_prefix(&prefix);
            for queue in &queues {
                prop_assert!(queue.starts_with(&prefix));
                prop_assert!(!seed.all().contains(&queue.as_str()));
            }
            let exchanges = names.exchanges();
            let unique: HashSet<&String> = exchanges.iter().collect();
            prop_assert_eq!(unique.len(), usize::from(count) + 2);
            prop_assert!(exchanges.iter().all(|e| e.starts_with(&prefix)));
        }

        /// The shard exchanges sorted by name (bytes, as the consistent-hash plugin sorts
        /// the bindings when it rebuilds its ring at boot) are in the order of their
        /// numbers, the order the bindings are made in: a restart keeps every bucket.
        #[test]
        fn sorted_names_are_in_shard_order(prefix in "[a-z0-9.]{0,12}", count in 1..=MAX_SHARDS) {
            let names = ShardNames::new(&prefix, count);
            let created: Vec<String> = (0..count).map(|shard| names.shard_exchange(shard)).collect();
            let mut sorted = created.clone();
            sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(sorted, created);
        }
    }
}
