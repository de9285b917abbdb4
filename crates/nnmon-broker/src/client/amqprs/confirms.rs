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
    pending: VecDeque<Pending>,
}

impl ConfirmWindow {
    pub(super) fn new() -> Self {
        Self {
            next_tag: 1,
            pending: VecDeque::new(),
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
                // Returns come in publish order, each before its message's ack: the message
                // returned is the oldest unsettled one not yet returned with that ID (any
                // such one, for a message without an ID).
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

    fn settle(&mut self, tag: u64, multiple: bool, acked: bool) {
        for pending in &mut self.pending {
            if pending.tag > tag {
                break;
            }
            if (multiple || pending.tag == tag) && pending.settled.is_none() {
                pending.settled = Some(acked);
            }
        }
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
}
