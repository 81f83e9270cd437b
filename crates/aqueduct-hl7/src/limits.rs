//! What keeps one peer, or many large messages, from exhausting the listener: connection slots
//! per peer address, and a global budget of bytes in flight (received, not yet committed and
//! acknowledged). The budget never refuses a message: when it is spent, connections take no
//! further frame (TCP pushes back on the senders) until commits free it, so nothing is refused
//! and nothing acknowledged is ever dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Bytes in flight, shared by every connection.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    freed: Notify,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Counts `n` bytes already received until the returned charge is dropped. Never waits: the
    /// bytes are in memory already; [`ByteBudget::wait_for_room`] is where readers pause.
    pub(crate) fn charge(self: &Arc<Self>, n: usize) -> Charge {
        let now = self.used.fetch_add(n, Ordering::AcqRel) + n;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Charge {
            budget: self.clone(),
            n,
        }
    }

    pub(crate) fn spent(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit
    }

    /// Returns once the budget has room again.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            // created before the check: a release in between still wakes it
            let freed = self.freed.notified();
            if !self.spent() {
                return;
            }
            freed.await;
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
}

/// Bytes counted against a [`ByteBudget`] until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<ByteBudget>,
    n: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
    }
}

/// Open connections per peer address.
#[derive(Debug)]
pub(crate) struct PeerSlots {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerSlots {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(PeerSlots {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `peer`, or None when it holds its limit.
    pub(crate) fn take(self: &Arc<Self>, peer: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            slots: self.clone(),
            peer,
        })
    }
}

/// One connection's place among its peer's; freed when dropped.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    slots: Arc<PeerSlots>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_waits_until_a_charge_is_dropped() {
        let b = ByteBudget::new(100);
        let c1 = b.charge(60);
        assert!(!b.spent());
        let c2 = b.charge(60);
        assert!(b.spent());
        assert_eq!(b.peak(), 120);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_for_room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(c1);
        waiter.await.unwrap();
        drop(c2);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn peer_slots_are_per_address_and_freed_on_drop() {
        let s = PeerSlots::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let one = s.take(a).unwrap();
        let _two = s.take(a).unwrap();
        assert!(s.take(a).is_none());
        assert!(s.take(b).is_some());
        drop(one);
        assert!(s.take(a).is_some());
    }
}
