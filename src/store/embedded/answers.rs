//! Answering a durable group's waiters. Each answer wakes the request that waits for it, and a
//! wake-up sent from the writer's thread comes from outside the runtime: the scheduler's shared
//! queue, under its lock, and perhaps a parked worker's futex, once per request. Handed to a task
//! on the runtime, a group costs one such wake-up, and its answers wake their requests from a
//! worker, onto that worker's own queue (the other worker steals from it).

use super::writer::{Committed, Reply};
use super::StoreError;

/// Who answers a durable group's reply slots: a task on the multi-threaded runtime the store was
/// opened on, or — without one (tools, tests on a current-thread runtime), or once that runtime
/// is gone — the writer itself. Either way only after the group is durable, and in group order.
#[derive(Clone)]
pub(super) struct Answers(Option<tokio::sync::mpsc::UnboundedSender<Answered>>);

/// A group's reply slots, each with its batch's result.
pub(super) type Answered = Vec<(Reply, Result<Committed, StoreError>)>;

impl Answers {
    pub(super) fn start() -> Answers {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return Answers(None) };
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Answers(None);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answered>();
        rt.spawn(async move {
            while let Some(group) = rx.recv().await {
                answer(group);
            }
        });
        Answers(Some(tx))
    }

    pub(super) fn send(&self, group: Answered) {
        if group.is_empty() {
            return;
        }
        match &self.0 {
            Some(tx) => {
                if let Err(unsent) = tx.send(group) {
                    answer(unsent.0);
                }
            }
            None => answer(group),
        }
    }
}

/// Sends each reply slot its batch's result (a waiter that gave up is no one's concern).
fn answer(group: Answered) {
    for (reply, result) in group {
        let _ = reply.send(result);
    }
}
