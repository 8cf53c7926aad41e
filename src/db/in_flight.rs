//! Calls in flight, so that a crash does not forget them: each call the
//! proxy sends upstream is listed here from its dispatch to its end. The log
//! writer writes every call that has run longer than a flush interval as a
//! row marked by its `call_id` (an `in flight` row); the call's end fills
//! that row in. After a crash such rows are settled as interrupted
//! (`queries::logs::settle_interrupted`): the log and the client's usage
//! keep every call the upstream may have run.
//!
//! The request path takes one uncontended lock of one of several shards on
//! the way in and out (the writer holds each only to copy a few fields once
//! per flush); it never waits on the writer or the database.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::models::NewLog;

const SHARDS: usize = 16;

/// What the log needs of a call before it ends.
pub struct Flight {
    pub created_at: i64,
    pub endpoint: String,
    pub model: String,
    pub requested_model: Option<String>,
    pub stream: bool,
    pub client: Option<Arc<str>>,
}

/// The calls' numbers are unique: one multiplication spreads them over the
/// hash's bits (SipHash, the default, costs more than the rest of a lookup).
#[derive(Default)]
struct Numbered(u64);

impl Hasher for Numbered {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = Mutex<HashMap<u64, Arc<Entry>, BuildHasherDefault<Numbered>>>;

struct Entry {
    flight: Flight,
    /// Written as an in-flight row: its end updates that row.
    written: AtomicBool,
}

/// The calls in flight of this process, and its name in their `call_id`s.
pub struct Flights {
    shards: Vec<Shard>,
    next: AtomicU64,
    /// This process's name: `call_id` is `<name>-<number>`.
    name: String,
}

/// One call's place in the list; `end` takes it out.
pub struct Ticket {
    seq: u64,
    entry: Arc<Entry>,
}

/// The error an in-flight row carries until its call ends.
pub const IN_FLIGHT: &str = "in flight: the call had not ended when this row was written";

impl Flights {
    pub fn new(name: String) -> Arc<Self> {
        Arc::new(Flights {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            next: AtomicU64::new(0),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn shard(&self, seq: u64) -> &Shard {
        &self.shards[(seq % SHARDS as u64) as usize]
    }

    fn call_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.name)
    }

    /// Lists a call from now until `end`.
    pub fn start(&self, flight: Flight) -> Ticket {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry { flight, written: AtomicBool::new(false) });
        self.shard(seq).lock().unwrap_or_else(|e| e.into_inner()).insert(seq, entry.clone());
        Ticket { seq, entry }
    }

    /// Takes the call off the list: `Some(call_id)` when it was written as
    /// an in-flight row (its final row then fills that one in).
    pub fn end(&self, ticket: Ticket) -> Option<String> {
        self.shard(ticket.seq).lock().unwrap_or_else(|e| e.into_inner()).remove(&ticket.seq);
        // Read after the removal: the writer marks entries only while they
        // are listed, under the same lock.
        ticket.entry.written.load(Ordering::Acquire).then(|| self.call_id(ticket.seq))
    }

    /// Calls begun at or before `before` (epoch ms) and not yet written, as
    /// in-flight rows, each marked written.
    pub fn due(&self, before: i64, now: i64) -> Vec<NewLog> {
        let mut rows = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (seq, e) in shard.iter() {
                let f = &e.flight;
                if f.created_at > before || e.written.load(Ordering::Acquire) {
                    continue;
                }
                e.written.store(true, Ordering::Release);
                rows.push(NewLog {
                    created_at: f.created_at,
                    key_id: None,
                    key_masked: String::new(),
                    model: f.model.clone(),
                    endpoint: f.endpoint.clone(),
                    status: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    total_tokens: 0,
                    latency_ms: (now - f.created_at).max(0),
                    ttfb_ms: None,
                    stream: f.stream,
                    aborted: false,
                    attempts: 0,
                    error: Some(IN_FLIGHT.to_string()),
                    client: f.client.as_deref().map(str::to_string),
                    requested_model: f.requested_model.clone(),
                    call_id: Some(self.call_id(*seq)),
                    usage_estimated: false,
                });
            }
        }
        rows
    }

    /// Calls listed now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(at: i64) -> Flight {
        Flight {
            created_at: at,
            endpoint: "/v1/chat/completions".into(),
            model: "m".into(),
            requested_model: None,
            stream: true,
            client: Some(Arc::from("c")),
        }
    }

    #[test]
    fn a_call_is_written_once_when_due_and_its_end_names_the_row() {
        let f = Flights::new("w".into());
        let early = f.start(flight(1_000));
        let late = f.start(flight(5_000));
        assert!(f.due(500, 6_000).is_empty(), "nothing begun before 500");
        let rows = f.due(2_000, 6_000);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].call_id.as_deref(), Some("w-0"));
        assert_eq!(rows[0].latency_ms, 5_000);
        assert_eq!(rows[0].error.as_deref(), Some(IN_FLIGHT));
        assert!(f.due(2_000, 7_000).is_empty(), "written once");
        assert_eq!(f.end(early), Some("w-0".into()));
        assert_eq!(f.end(late), None, "never written: its row is inserted at its end");
        assert!(f.is_empty());
    }
}
