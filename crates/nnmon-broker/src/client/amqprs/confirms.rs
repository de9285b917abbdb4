//! Publisher confirms as amqprs reports them — acks and nacks of a delivery tag, perhaps
//! `multiple`, and returns of unroutable messages — turned into the outcome of each
//! message, in publish order. Pure bookkeeping, without I/O.

use crate::client::Outcome;
use std::collections::VecDeque;

/// What the broker said about published messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Confirm {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    /// basic.return of a `mandatory` message no queue took. RabbitMQ sends it before the
    /// message's ack; it carries the message's properties, not its tag.
    Return {
        message_id: Option<String>,
    },
}

/// One message awaiting its outcome.
#[derive(Debug)]
struct Pending {
    tag: u64,
    message_id: Option<String>,
    returned: bool,
    /// `Some(true)` acked, `Some(false)` nacked.
    settled: Option<bool>,
}

/// The messages of one confirm-mode channel whose outcome is not yet taken, oldest first.
#[derive(Debug)]
pub(super) struct ConfirmWindow {
    /// The tag the broker gives the next message published (tags count from 1).
    next_tag: u64,
    /// Oldest first; their tags increase (by one: each message takes the next tag).
    pending: VecDeque<Pending>,
    /// Every message with a tag up to this one is settled (by a `multiple` confirm, or one
    /// by one): a `multiple` confirm starts after it, so that each costs what it settles.
    settled_upto: u64,
}

impl ConfirmWindow {
    pub(super) fn new() -> Self {
        Self {
            next_tag: 1,
            pending: VecDeque::new(),
            settled_upto: 0,
        }
    }

    /// A message was published: the broker numbers it next.
    pub(super) fn sent(&mut self, message_id: Option<String>) {
        self.pending.push_back(Pending {
            tag: self.next_tag,
            message_id,
            returned: false,
            settled: None,
        });
        self.next_tag += 1;
    }

    pub(super) fn apply(&mut self, confirm: Confirm) {
        match confirm {
            Confirm::Ack { tag, multiple } => self.settle(tag, multiple, true),
            Confirm::Nack { tag, multiple } => self.settle(tag, multiple, false),
            Confirm::Return { message_id } => {
                // A basic.return carries the message's properties but not its tag.
                // RabbitMQ sends it before that message's basic.ack (and returns come in
                // publish order), so the message returned is still unsettled: it is the
                // oldest open message (unsettled, not yet marked returned) with the
                // return's message ID — with an ID repeated, the oldest open one with it,
                // the next return of that ID taking the next one. A return without an ID
                // (or, which RabbitMQ's order rules out, with an ID no open message has)
                // marks the oldest open message whatever its ID.
                let open = |p: &Pending| p.settled.is_none() && !p.returned;
                let index = message_id
                    .as_ref()
                    .and_then(|id| {
                        self.pending
                            .iter()
                            .position(|p| open(p) && p.message_id.as_ref() == Some(id))
                    })
                    .or_else(|| self.pending.iter().position(open));
                if let Some(index) = index {
                    self.pending[index].returned = true;
                }
            }
        }
    }

    /// Settles `tag` (`multiple`: and every earlier one not settled yet). A single confirm
    /// finds its message by binary search (tags increase); a `multiple` one walks only the
    /// messages after the last `multiple` confirm's tag: each message is walked over by at
    /// most one `multiple` confirm.
    fn settle(&mut self, tag: u64, multiple: bool, acked: bool) {
        let settle = |pending: &mut Pending| {
            pending.settled.get_or_insert(acked);
        };
        if !multiple {
            let index = self.pending.partition_point(|p| p.tag < tag);
            if let Some(pending) = self.pending.get_mut(index).filter(|p| p.tag == tag) {
                settle(pending);
            }
            return;
        }
        if tag <= self.settled_upto {
            return;
        }
        let from = self.settled_upto;
        let start = self.pending.partition_point(|p| p.tag <= from);
        for pending in self.pending.range_mut(start..) {
            if pending.tag > tag {
                break;
            }
            settle(pending);
        }
        // Never past the last message sent: a broker confirming a tag not sent yet must
        // not settle the messages that will get it.
        self.settled_upto = tag.min(self.next_tag - 1);
    }

    /// The oldest message's outcome, once known.
    pub(super) fn oldest(&self) -> Option<Outcome> {
        let oldest = self.pending.front()?;
        Some(match oldest.settled? {
            true if oldest.returned => Outcome::Returned,
            true => Outcome::Ack,
            false => Outcome::Nack,
        })
    }

    /// Forgets the oldest message (its outcome taken).
    pub(super) fn pop(&mut self) {
        self.pending.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(ids: &[&str]) -> ConfirmWindow {
        let mut window = ConfirmWindow::new();
        for id in ids {
            window.sent(Some((*id).to_owned()));
        }
        window
    }

    fn drain(window: &mut ConfirmWindow) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        while let Some(outcome) = window.oldest() {
            outcomes.push(outcome);
            window.pop();
        }
        outcomes
    }

    #[test]
    fn a_multiple_ack_settles_every_earlier_message_and_no_later_one() {
        let mut window = window(&["a", "b", "c", "d"]);
        assert_eq!(window.oldest(), None);
        window.apply(Confirm::Ack {
            tag: 3,
            multiple: true,
        });
        assert_eq!(drain(&mut window), [Outcome::Ack; 3]);
        assert_eq!(window.oldest(), None, "d is still in flight");
        window.apply(Confirm::Ack {
            tag: 4,
            multiple: false,
        });
        assert_eq!(drain(&mut window), [Outcome::Ack]);
    }

    #[test]
    fn a_single_ack_out_of_order_waits_for_the_older_ones() {
        let mut window = window(&["a", "b"]);
        window.apply(Confirm::Ack {
            tag: 2,
            multiple: false,
        });
        assert_eq!(window.oldest(), None, "a comes first");
        window.apply(Confirm::Ack {
            tag: 1,
            multiple: false,
        });
        assert_eq!(drain(&mut window), [Outcome::Ack, Outcome::Ack]);
    }

    #[test]
    fn nacks_single_and_multiple() {
        let mut window = window(&["a", "b", "c"]);
        window.apply(Confirm::Nack {
            tag: 2,
            multiple: true,
        });
        window.apply(Confirm::Ack {
            tag: 3,
            multiple: false,
        });
        assert_eq!(
            drain(&mut window),
            [Outcome::Nack, Outcome::Nack, Outcome::Ack]
        );
    }

    #[test]
    fn a_return_marks_the_message_with_its_id_even_behind_older_ones() {
        let mut window = window(&["a", "b", "c"]);
        window.apply(Confirm::Return {
            message_id: Some("b".into()),
        });
        window.apply(Confirm::Ack {
            tag: 3,
            multiple: true,
        });
        assert_eq!(
            drain(&mut window),
            [Outcome::Ack, Outcome::Returned, Outcome::Ack]
        );
    }

    #[test]
    fn returns_of_one_id_twice_mark_its_two_messages_in_order() {
        let mut window = window(&["x", "x", "y"]);
        window.apply(Confirm::Ack {
            tag: 1,
            multiple: false,
        });
        window.apply(Confirm::Return {
            message_id: Some("x".into()),
        });
        window.apply(Confirm::Ack {
            tag: 3,
            multiple: true,
        });
        assert_eq!(
            drain(&mut window),
            [Outcome::Ack, Outcome::Returned, Outcome::Ack]
        );
    }

    #[test]
    fn two_returns_of_one_id_interleaved_with_acks_mark_its_messages_oldest_first() {
        // Each return comes before its message's ack, the second one after the first
        // message was acked: it must mark the second `x`, not the first again.
        let mut first = window(&["x", "x", "x", "y"]);
        first.apply(Confirm::Return {
            message_id: Some("x".into()),
        });
        first.apply(Confirm::Ack {
            tag: 1,
            multiple: false,
        });
        first.apply(Confirm::Return {
            message_id: Some("x".into()),
        });
        first.apply(Confirm::Ack {
            tag: 2,
            multiple: false,
        });
        first.apply(Confirm::Ack {
            tag: 4,
            multiple: true,
        });
        assert_eq!(
            drain(&mut first),
            [
                Outcome::Returned,
                Outcome::Returned,
                Outcome::Ack,
                Outcome::Ack
            ]
        );

        // Both returns before one multiple ack: the two oldest `x`, the third acked only.
        let mut second = window(&["x", "y", "x", "x"]);
        for _ in 0..2 {
            second.apply(Confirm::Return {
                message_id: Some("x".into()),
            });
        }
        second.apply(Confirm::Ack {
            tag: 4,
            multiple: true,
        });
        assert_eq!(
            drain(&mut second),
            [
                Outcome::Returned,
                Outcome::Ack,
                Outcome::Returned,
                Outcome::Ack
            ]
        );
    }

    #[test]
    fn a_return_without_an_id_marks_the_oldest_unsettled_message() {
        let mut window = ConfirmWindow::new();
        window.sent(None);
        window.sent(None);
        window.apply(Confirm::Ack {
            tag: 1,
            multiple: false,
        });
        window.apply(Confirm::Return { message_id: None });
        window.apply(Confirm::Ack {
            tag: 2,
            multiple: false,
        });
        assert_eq!(drain(&mut window), [Outcome::Ack, Outcome::Returned]);
    }

    /// The settling rule as first written: every confirm walks the window from the front.
    #[derive(Default)]
    struct Naive {
        next_tag: u64,
        pending: VecDeque<(u64, Option<bool>)>,
    }

    impl Naive {
        fn sent(&mut self) {
            self.next_tag += 1;
            self.pending.push_back((self.next_tag, None));
        }

        fn settle(&mut self, tag: u64, multiple: bool, acked: bool) {
            for (pending, settled) in &mut self.pending {
                if *pending > tag {
                    break;
                }
                if (multiple || *pending == tag) && settled.is_none() {
                    *settled = Some(acked);
                }
            }
        }

        fn drain(&mut self) -> Vec<Outcome> {
            let mut outcomes = Vec::new();
            while let Some((_, Some(acked))) = self.pending.front() {
                outcomes.push(if *acked { Outcome::Ack } else { Outcome::Nack });
                self.pending.pop_front();
            }
            outcomes
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Send,
        Confirm { ack: bool, tag: u64, multiple: bool },
        Drain,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Send),
            4 => (any::<bool>(), 1u64..48, any::<bool>())
                .prop_map(|(ack, tag, multiple)| Step::Confirm { ack, tag, multiple }),
            1 => Just(Step::Drain),
        ]
    }

    proptest! {
        /// Acks and nacks, single and multiple, in any order (repeated, for tags not sent
        /// yet, for tags already taken out), settle as the naive walk does.
        #[test]
        fn confirms_in_any_order_settle_as_the_naive_walk(steps in proptest::collection::vec(step(), 0..120)) {
            let mut window = ConfirmWindow::new();
            let mut naive = Naive::default();
            for step in steps {
                match step {
                    Step::Send => {
                        window.sent(None);
                        naive.sent();
                    }
                    Step::Confirm { ack, tag, multiple } => {
                        window.apply(if ack {
                            Confirm::Ack { tag, multiple }
                        } else {
                            Confirm::Nack { tag, multiple }
                        });
                        naive.settle(tag, multiple, ack);
                    }
                    Step::Drain => {
                        prop_assert_eq!(drain(&mut window), naive.drain());
                    }
                }
            }
            prop_assert_eq!(drain(&mut window), naive.drain());
            prop_assert_eq!(window.pending.len(), naive.pending.len());
        }
    }
}
