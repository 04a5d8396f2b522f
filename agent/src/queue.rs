//! The bounded report queue between collection and the broker.
//!
//! A report stays in the queue until the broker acknowledges it (PUBACK);
//! while the agent is disconnected reports wait here. When the queue is full
//! the oldest report is dropped and counted (the oldest not in flight, if
//! any: a report being sent right now is most likely about to be
//! acknowledged); the running count travels in every telemetry report's
//! `dropped` field.
//!
//! Entries are in sequence order. Those handed to the MQTT client on the
//! current connection are marked `sent`; they always form a prefix of the
//! queue, because the publisher sends in order and, when the connection is
//! lost, marks everything unsent again ([`ReportQueue::unsend_all`]).

use std::collections::VecDeque;

/// One encoded telemetry report waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The report's sequence number.
    pub seq: u64,
    /// The encoded report (CBOR).
    pub payload: Vec<u8>,
    /// Handed to the MQTT client on the current connection.
    pub sent: bool,
}

/// A bounded FIFO of encoded reports that counts what it drops.
#[derive(Debug)]
pub struct ReportQueue {
    items: VecDeque<Queued>,
    capacity: usize,
    dropped: u64,
}

impl ReportQueue {
    /// An empty queue holding at most `capacity` reports (at least one).
    pub fn new(capacity: usize) -> ReportQueue {
        let capacity = capacity.max(1);
        ReportQueue {
            items: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            dropped: 0,
        }
    }

    /// Adds report `seq`. When the queue is full the oldest report not in
    /// flight (else the oldest) is dropped first and counted; `encode` is then called with the updated drop count
    /// (so the new report carries it) and its result queued. Returns the
    /// sequence number of the dropped report, if one was.
    pub fn push_with(&mut self, seq: u64, encode: impl FnOnce(u64) -> Vec<u8>) -> Option<u64> {
        let evicted = if self.items.len() >= self.capacity {
            self.dropped += 1;
            // The oldest report that is not in flight: one the client is
            // sending now is most likely delivered already.
            let i = self.items.iter().position(|q| !q.sent).unwrap_or(0);
            self.items.remove(i).map(|q| q.seq)
        } else {
            None
        };
        let payload = encode(self.dropped);
        self.items.push_back(Queued {
            seq,
            payload,
            sent: false,
        });
        evicted
    }

    /// Removes report `seq` once the broker has acknowledged it. Returns
    /// whether it was still queued (it may have been dropped meanwhile).
    pub fn ack(&mut self, seq: u64) -> bool {
        // Acks arrive in order in practice: look near the front first.
        match self.items.iter().position(|q| q.seq == seq) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    /// The oldest report not yet handed to the client on this connection.
    pub fn next_unsent(&self) -> Option<&Queued> {
        self.items.iter().find(|q| !q.sent)
    }

    /// Marks report `seq` as handed to the client.
    pub fn mark_sent(&mut self, seq: u64) {
        if let Some(q) = self.items.iter_mut().find(|q| q.seq == seq) {
            q.sent = true;
        }
    }

    /// Reports handed to the client and not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.items.iter().take_while(|q| q.sent).count()
    }

    /// Marks every report unsent: the connection is gone, and whatever was in
    /// flight has to be sent again on the next one.
    pub fn unsend_all(&mut self) {
        for q in &mut self.items {
            q.sent = false;
        }
    }

    /// Reports dropped because the queue was full, since the agent started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no report is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The sequence numbers waiting, oldest first.
    pub fn seqs(&self) -> Vec<u64> {
        self.items.iter().map(|q| q.seq).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut ReportQueue, seq: u64) -> (Option<u64>, u64) {
        let mut seen = None;
        let evicted = q.push_with(seq, |dropped| {
            seen = Some(dropped);
            vec![seq as u8]
        });
        (evicted, seen.unwrap())
    }

    fn take(q: &mut ReportQueue) -> Option<u64> {
        let seq = q.next_unsent()?.seq;
        q.mark_sent(seq);
        Some(seq)
    }

    #[test]
    fn drops_oldest_when_full_and_counts() {
        let mut q = ReportQueue::new(3);
        // (seq pushed, evicted, drop count the new report carries)
        let steps = [
            (0, None, 0),
            (1, None, 0),
            (2, None, 0),
            (3, Some(0), 1),
            (4, Some(1), 2),
        ];
        for (seq, evicted, dropped) in steps {
            assert_eq!(push(&mut q, seq), (evicted, dropped), "seq {seq}");
        }
        assert_eq!(q.seqs(), [2, 3, 4]);
        assert_eq!(q.dropped(), 2);
    }

    #[test]
    fn leaves_only_on_ack() {
        let mut q = ReportQueue::new(10);
        for seq in 0..4 {
            push(&mut q, seq);
        }
        assert_eq!(take(&mut q), Some(0));
        assert_eq!(take(&mut q), Some(1));
        assert_eq!(q.in_flight(), 2);
        // Acked out of order.
        assert!(q.ack(1));
        assert!(!q.ack(1));
        assert_eq!(q.seqs(), [0, 2, 3]);
        assert_eq!(q.in_flight(), 1);
        // Connection lost: 0 must go again, first.
        q.unsend_all();
        assert_eq!(q.in_flight(), 0);
        assert_eq!(take(&mut q), Some(0));
        assert!(q.ack(0));
        assert_eq!(take(&mut q), Some(2));
        assert_eq!(take(&mut q), Some(3));
        assert_eq!(take(&mut q), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn eviction_spares_reports_in_flight() {
        let mut q = ReportQueue::new(3);
        for seq in 0..3 {
            push(&mut q, seq);
        }
        assert_eq!(take(&mut q), Some(0));
        // 0 is in flight: 1 is the oldest waiting, and goes.
        assert_eq!(push(&mut q, 3), (Some(1), 1));
        assert_eq!(q.seqs(), [0, 2, 3]);
        assert_eq!(q.in_flight(), 1);
        // All in flight: the oldest goes after all.
        while take(&mut q).is_some() {}
        assert_eq!(push(&mut q, 4), (Some(0), 2));
        assert_eq!(q.seqs(), [2, 3, 4]);
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn capacity_of_at_least_one() {
        let mut q = ReportQueue::new(0);
        assert_eq!(push(&mut q, 7), (None, 0));
        assert_eq!(push(&mut q, 8), (Some(7), 1));
        assert_eq!(q.seqs(), [8]);
    }
}
