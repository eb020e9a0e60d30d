//! The ordered-acknowledgement ledger: the one place where "this part of a chunk is delivered"
//! becomes an [`Ack`] for the checkpointer.
//!
//! A sink registers every chunk it takes, in the order it takes them, with the number of
//! pieces it will deliver the chunk in (changes, lines, messages: whatever the sink counts;
//! zero for a chunk with nothing to deliver, such as a position-only chunk). As pieces become
//! durable, in any order, it marks them done, then takes the acks that became ready.
//!
//! Invariants:
//! - Acks leave in registration order, each once, and only when every piece of their chunk
//!   and of every earlier chunk is done (delivered, or dead-lettered: handled either way).
//! - After [`Ledger::fail`] at a chunk, neither that chunk nor any later one is ever acked:
//!   its changes stay behind the checkpoint and are sent again after a restart.
//! - A sink that marks more pieces done than it registered has a bug; the ledger then acks
//!   nothing from that chunk on (and logs it), so a bug can cost progress, never a change.
//!
//! Everything is counted: registering a chunk and marking a run of pieces are O(1), nothing
//! is allocated per change and nothing is locked (one ledger lives on one task or thread).
//! [`Pieces`] lets one unit of work (an HTTP batch) carry pieces of several chunks, and one
//! chunk be spread over many units of work.

use std::collections::VecDeque;

use crate::change::Chunk;
use crate::checkpoint::{Position, Records};

/// Acks are the checkpointer's type; in the product they are made only by
/// [`Ledger::pop_ready`].
pub use crate::checkpoint::Ack;

/// What a chunk's ack will carry, taken when the chunk is registered so that its buffers can
/// go before it is delivered.
#[derive(Debug, Clone)]
pub struct Mark {
    position: Option<Position>,
    changes: usize,
    records: Vec<Records>,
    server: Option<std::sync::Arc<crate::checkpoint::ServerIdentity>>,
}

impl Mark {
    pub fn of(chunk: &Chunk) -> Mark {
        Mark {
            position: chunk.position.clone(),
            changes: chunk.changes.len(),
            records: chunk.records.clone(),
            server: chunk.server.clone(),
        }
    }
}

/// A registered chunk, numbered in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// Pieces of registered chunks held by one unit of work: runs of (chunk, pieces of it).
///
/// Filled in commit order, so consecutive pieces of one chunk extend one run: a batch spanning
/// three chunks holds three runs, however many changes it has.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pieces {
    runs: Vec<(Ticket, usize)>,
}

impl Pieces {
    /// One more piece of chunk `ticket`.
    pub fn add(&mut self, ticket: Ticket) {
        match self.runs.last_mut() {
            Some((t, n)) if *t == ticket => *n += 1,
            _ => self.runs.push((ticket, 1)),
        }
    }

    /// The earliest chunk these pieces belong to.
    pub fn first(&self) -> Option<Ticket> {
        self.runs.iter().map(|(t, _)| *t).min()
    }
}

/// Registered chunks not yet acknowledged, and how many of their pieces are still out.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Oldest first; `entries[i]` holds ticket `front + i`.
    entries: VecDeque<Entry>,
    front: u64,
    /// The first chunk that will never be acked (a piece failed or was abandoned).
    stop_at: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    mark: Mark,
    /// Pieces not yet done.
    pending: usize,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Registers the next chunk, to be delivered in `pieces` pieces (zero: it is ready as soon
    /// as every earlier chunk is).
    pub fn register(&mut self, mark: Mark, pieces: usize) -> Ticket {
        let ticket = Ticket(self.front + self.entries.len() as u64);
        self.entries.push_back(Entry {
            mark,
            pending: pieces,
        });
        ticket
    }

    /// `pieces` pieces of chunk `ticket` are durably delivered (or dead-lettered).
    pub fn done(&mut self, ticket: Ticket, pieces: usize) {
        let pending = ticket
            .0
            .checked_sub(self.front)
            .and_then(|i| self.entries.get_mut(i as usize))
            .map(|e| &mut e.pending);
        match pending {
            Some(p) if *p >= pieces => *p -= pieces,
            _ => self.misuse(ticket, pieces),
        }
    }

    /// Every piece in `pieces` is durably delivered (or dead-lettered).
    pub fn done_all(&mut self, pieces: &Pieces) {
        for &(ticket, n) in &pieces.runs {
            self.done(ticket, n);
        }
    }

    /// A piece of chunk `ticket` will not be delivered by this run: that chunk and every later
    /// one are never acked.
    pub fn fail(&mut self, ticket: Ticket) {
        self.stop_at = Some(self.stop_at.map_or(ticket.0, |s| s.min(ticket.0)));
    }

    /// The pieces in `pieces` will not be delivered by this run (see [`Ledger::fail`]).
    pub fn fail_all(&mut self, pieces: &Pieces) {
        if let Some(first) = pieces.first() {
            self.fail(first);
        }
    }

    /// The next ack that is ready, in registration order; each chunk's ack once.
    pub fn pop_ready(&mut self) -> Option<Ack> {
        let entry = self.entries.front()?;
        if entry.pending > 0 || self.stop_at.is_some_and(|s| s <= self.front) {
            return None;
        }
        let entry = self.entries.pop_front()?;
        self.front += 1;
        Some(Ack {
            position: entry.mark.position,
            changes: entry.mark.changes,
            records: entry.mark.records,
            server: entry.mark.server,
        })
    }

    /// Every registered chunk is acknowledged.
    pub fn is_settled(&self) -> bool {
        self.entries.is_empty()
    }

    /// Registered chunks not yet acknowledged.
    #[cfg(test)]
    pub fn unacked(&self) -> usize {
        self.entries.len()
    }

    /// Some chunk will never be acked ([`Ledger::fail`], or a sink's bug).
    pub fn has_failed(&self) -> bool {
        self.stop_at.is_some()
    }

    /// More pieces done than registered, or a chunk that is not registered (any more): a bug
    /// in the sink. An earlier ack may have been premature; acknowledge nothing from here on.
    #[cold]
    fn misuse(&mut self, ticket: Ticket, pieces: usize) {
        tracing::error!(
            chunk = ticket.0,
            pieces,
            "bug: the sink marked pieces done that it never registered; no further progress will be checkpointed"
        );
        self.fail(Ticket(ticket.0.max(self.front)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of `changes` changes whose position names `n` (its offset), to tell acks apart.
    fn mark(n: u64, changes: usize) -> Mark {
        Mark {
            position: Some(Position {
                offset: n,
                ..Position::default()
            }),
            changes,
            records: Vec::new(),
            server: None,
        }
    }

    fn ready(l: &mut Ledger) -> Vec<u64> {
        std::iter::from_fn(|| l.pop_ready())
            .map(|a| a.position.map_or(u64::MAX, |p| p.offset))
            .collect()
    }

    #[test]
    fn in_order_completion_acks_each_chunk_once() {
        let mut l = Ledger::new();
        let a = l.register(mark(1, 2), 2);
        let b = l.register(mark(2, 1), 1);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        l.done(a, 1);
        assert_eq!(ready(&mut l), Vec::<u64>::new(), "one piece of two");
        l.done(a, 1);
        let ack = l.pop_ready().unwrap();
        assert_eq!(ack, mark_ack(1, 2));
        assert_eq!(l.pop_ready(), None, "once");
        l.done(b, 1);
        assert_eq!(ready(&mut l), vec![2]);
        assert!(l.is_settled());
        assert!(!l.has_failed());
    }

    fn mark_ack(n: u64, changes: usize) -> Ack {
        let m = mark(n, changes);
        Ack {
            position: m.position,
            changes: m.changes,
            records: m.records,
            server: m.server,
        }
    }

    #[test]
    fn out_of_order_completion_acks_in_chunk_order() {
        let mut l = Ledger::new();
        let t: Vec<Ticket> = (1..=4).map(|n| l.register(mark(n, 1), 1)).collect();
        l.done(t[3], 1);
        l.done(t[2], 1);
        assert_eq!(ready(&mut l), Vec::<u64>::new(), "the first is still out");
        l.done(t[0], 1);
        assert_eq!(ready(&mut l), vec![1], "the second is still out");
        l.done(t[1], 1);
        assert_eq!(ready(&mut l), vec![2, 3, 4]);
        assert!(l.is_settled());
    }

    #[test]
    fn empty_chunks_follow_the_chunk_before_them() {
        let mut l = Ledger::new();
        // Position-only chunks first: ready at once.
        l.register(mark(1, 0), 0);
        assert_eq!(ready(&mut l), vec![1]);
        let a = l.register(mark(2, 3), 3);
        l.register(mark(3, 0), 0);
        l.register(mark(4, 0), 0);
        assert_eq!(
            ready(&mut l),
            Vec::<u64>::new(),
            "not past the undelivered chunk"
        );
        assert_eq!(l.unacked(), 3);
        l.done(a, 3);
        assert_eq!(ready(&mut l), vec![2, 3, 4]);
        // A chunk without a known position still acks (its changes count), in its turn.
        l.register(
            Mark {
                position: None,
                changes: 0,
                records: Vec::new(),
                server: None,
            },
            0,
        );
        assert_eq!(ready(&mut l), vec![u64::MAX]);
    }

    #[test]
    fn a_chunk_split_over_batches_on_several_lanes() {
        let mut l = Ledger::new();
        let t = l.register(mark(1, 5), 5);
        // Three lanes take 2, 2 and 1 of its changes.
        let mut lanes = [Pieces::default(), Pieces::default(), Pieces::default()];
        for lane in [0, 1, 0, 1, 2] {
            lanes[lane].add(t);
        }
        assert_eq!(lanes[0].runs, vec![(t, 2)]);
        l.done_all(&lanes[2]);
        l.done_all(&lanes[0]);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        l.done_all(&lanes[1]);
        assert_eq!(ready(&mut l), vec![1]);
    }

    #[test]
    fn a_batch_spanning_chunks_holds_one_run_per_chunk() {
        let mut l = Ledger::new();
        let a = l.register(mark(1, 2), 2);
        let b = l.register(mark(2, 0), 0);
        let c = l.register(mark(3, 3), 3);
        assert!(a < b && b < c);
        // Lane 0: a, a, c, c; lane 1: c.
        let mut first = Pieces::default();
        let mut second = Pieces::default();
        for t in [a, a, c, c] {
            first.add(t);
        }
        second.add(c);
        assert_eq!(first.runs, vec![(a, 2), (c, 2)]);
        assert_eq!(first.first(), Some(a));
        l.done_all(&second);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        l.done_all(&first);
        assert_eq!(ready(&mut l), vec![1, 2, 3]);
        assert!(l.is_settled());
    }

    #[test]
    fn a_failure_stops_every_ack_from_its_chunk_on() {
        let mut l = Ledger::new();
        let a = l.register(mark(1, 1), 1);
        let b = l.register(mark(2, 2), 2);
        let c = l.register(mark(3, 1), 1);
        let d = l.register(mark(4, 0), 0);
        // b's second piece fails; a later batch holding c completes anyway.
        l.done(b, 1);
        l.fail(b);
        l.done(c, 1);
        assert!(l.has_failed());
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        // What is before the failure still acks once delivered...
        l.done(a, 1);
        assert_eq!(ready(&mut l), vec![1]);
        // ...but nothing from the failed chunk on, even if its pieces are later marked done.
        l.done(b, 1);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        assert_eq!(l.unacked(), 3);
        // A failure at a later chunk does not move the stop on.
        l.fail(d);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        assert_eq!(l.unacked(), 3);
    }

    #[test]
    fn failing_pieces_stops_at_their_earliest_chunk() {
        let mut l = Ledger::new();
        let a = l.register(mark(1, 1), 1);
        let b = l.register(mark(2, 1), 1);
        let mut p = Pieces::default();
        p.add(b);
        p.add(a); // out of commit order: still stops at the earliest
        assert_eq!(p.first(), Some(a));
        l.fail_all(&p);
        l.done(a, 1);
        l.done(b, 1);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        // Empty pieces fail nothing.
        let mut l = Ledger::new();
        l.fail_all(&Pieces::default());
        l.register(mark(1, 0), 0);
        assert_eq!(ready(&mut l), vec![1]);
    }

    #[test]
    fn marking_more_than_registered_acks_nothing_further() {
        let mut l = Ledger::new();
        let a = l.register(mark(1, 1), 1);
        let b = l.register(mark(2, 1), 1);
        l.done(b, 2);
        assert!(l.has_failed());
        l.done(a, 1);
        assert_eq!(ready(&mut l), vec![1], "before the bad chunk: fine");
        assert_eq!(l.pop_ready(), None);
        // A ticket already acked, or never registered, stops everything from here on.
        let mut l = Ledger::new();
        let a = l.register(mark(1, 0), 0);
        assert_eq!(ready(&mut l), vec![1]);
        l.done(a, 1);
        l.register(mark(2, 0), 0);
        assert_eq!(ready(&mut l), Vec::<u64>::new());
        let mut l = Ledger::new();
        l.done(Ticket(7), 1);
        for n in 0..10 {
            l.register(mark(n, 0), 0);
        }
        assert_eq!(ready(&mut l), (0..7).collect::<Vec<u64>>());
    }

    #[test]
    fn tickets_keep_counting_after_acks() {
        let mut l = Ledger::new();
        for round in 0..3u64 {
            let t = l.register(mark(round, 1), 1);
            assert_eq!(t, Ticket(round));
            l.done(t, 1);
            assert_eq!(ready(&mut l), vec![round]);
        }
    }
}
