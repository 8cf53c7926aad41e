//! The request path's side of the log: handlers hand rows to the sink
//! without waiting (a lock-free channel), count the requests still open,
//! and share the counters `/health` shows. The log writer (`log_writer`)
//! drains the channel on its own thread.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use actix::Addr;

use super::in_flight::{Flight, Flights, Ticket};
use super::log_writer::{LogWriter, Wake};
use super::models::NewLog;

/// What the request path, the log writer and `/health` share about the log:
/// rows not yet written, rows dropped, requests open, and whether writes fail.
pub struct LogCounters {
    /// Rows handed over and not yet written (in the channel, or kept by the
    /// writer after a failed write).
    pub(super) queued: AtomicUsize,
    /// Rows refused because `max` were already waiting (the database has
    /// been down a long time): counted, never silently lost.
    pub(super) dropped: AtomicU64,
    /// Rows the database refused to store (a value it cannot take), left out
    /// of batches whose other rows were written.
    pub(super) refused: AtomicU64,
    /// The most rows that may wait (`LOG_QUEUE_MAX`).
    pub(super) max: usize,
    /// Requests in flight (shutdown waits for them).
    pub(super) open: AtomicUsize,
    /// Epoch ms of the first failed write of the current run of failures; 0
    /// while writes succeed.
    pub(super) failing_since: AtomicI64,
    pub(super) last_error: Mutex<Option<String>>,
    /// Calls sent upstream and not yet ended (written early when long).
    pub(super) flights: Arc<Flights>,
}

impl LogCounters {
    /// The counters, and the list of calls in flight under a fresh name for
    /// this process (its log writer's, in batch markers and call ids).
    pub fn new(max: usize) -> Arc<Self> {
        use rand::distr::{Alphanumeric, SampleString};
        let name = Alphanumeric.sample_string(&mut rand::rng(), 16);
        Arc::new(LogCounters {
            max: max.max(1),
            flights: Flights::new(name),
            queued: Default::default(),
            dropped: Default::default(),
            refused: Default::default(),
            open: Default::default(),
            failing_since: Default::default(),
            last_error: Default::default(),
        })
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Since when (epoch ms), and why, rows cannot be written; `None` while
    /// the last write succeeded.
    pub fn failing(&self) -> Option<(i64, String)> {
        let since = self.failing_since.load(Ordering::Acquire);
        (since > 0).then(|| {
            let e = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (since, e.unwrap_or_default())
        })
    }

    pub(super) fn failed(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        let _ = self.failing_since.compare_exchange(0, super::now_ms(), Ordering::AcqRel, Ordering::Acquire);
    }

    pub(super) fn succeeded(&self) {
        self.failing_since.store(0, Ordering::Release);
    }
}

/// Where log rows go, and how many requests are still open (shutdown waits
/// for them, so that no row arrives after the final flush). A handle: every
/// request holds one, and cloning it is one reference count.
#[derive(Clone)]
pub struct LogSink(Arc<SinkInner>);

/// What watches the rows as they pass (the metrics): told of each batch
/// written and of each row the full queue dropped. A trait here, so that the
/// log writer knows nothing of what watches it.
pub trait RowObserver: Send + Sync {
    fn observe(&self, rows: &[NewLog]);
    /// A row dropped before the database: still a call answered.
    fn dropped(&self, row: &NewLog);
    /// Rows the database refused (already observed when they came in).
    fn refused(&self, rows: usize);
}

struct SinkInner {
    writer: Addr<LogWriter>,
    /// Lock-free hand-over: sending wakes nobody, so a request costs no
    /// cross-thread wake-up (a syscall and a context switch each).
    tx: Sender<NewLog>,
    counters: Arc<LogCounters>,
    batch: usize,
    /// A row the full queue drops is still a call answered.
    metrics: Arc<dyn RowObserver>,
}

impl LogSink {
    /// The sink; the log writer holds the receiving end and the same counters.
    pub fn new(
        writer: Addr<LogWriter>,
        tx: Sender<NewLog>,
        counters: Arc<LogCounters>,
        batch: usize,
        metrics: Arc<dyn RowObserver>,
    ) -> Self {
        LogSink(Arc::new(SinkInner { writer, tx, counters, batch: batch.max(1), metrics }))
    }

    pub fn push(&self, row: NewLog) {
        let sink = &*self.0;
        let c = &sink.counters;
        // Counted before it is sent: the writer subtracts what it writes, and
        // must never see the count below zero.
        let before = c.queued.fetch_add(1, Ordering::AcqRel);
        if before >= c.max {
            // The queue is full: the database has refused rows for a long
            // time. Counted (the writer says so in the log, /health shows it).
            c.queued.fetch_sub(1, Ordering::AcqRel);
            c.dropped.fetch_add(1, Ordering::AcqRel);
            sink.metrics.dropped(&row);
            return;
        }
        match sink.tx.send(row) {
            Ok(()) => {
                // Wake the writer once per batch; the timer takes the rest.
                if (before + 1).is_multiple_of(sink.batch) {
                    sink.writer.do_send(Wake);
                }
            }
            // Only after the writer is gone (a shutdown cut short): say so.
            Err(e) => {
                c.queued.fetch_sub(1, Ordering::AcqRel);
                c.dropped.fetch_add(1, Ordering::AcqRel);
                sink.metrics.dropped(&e.0);
                log::error!("request log row lost: the log writer has stopped ({e})")
            }
        }
    }

    pub fn counters(&self) -> &LogCounters {
        &self.0.counters
    }

    pub fn open_requests(&self) -> usize {
        self.0.counters.open.load(Ordering::Acquire)
    }

    /// Rows handed over and not yet written.
    pub fn queued(&self) -> usize {
        self.0.counters.queued()
    }

    /// Lists a call sent upstream until its end (`land`).
    pub fn take_off(&self, flight: Flight) -> Ticket {
        self.0.counters.flights.start(flight)
    }

    /// The call is over: `Some(call_id)` when its row was written in flight
    /// (the final row then fills it in).
    pub fn land(&self, ticket: Ticket) -> Option<String> {
        self.0.counters.flights.end(ticket)
    }

    pub fn opened(&self) {
        self.0.counters.open.fetch_add(1, Ordering::AcqRel);
    }

    pub fn closed(&self) {
        self.0.counters.open.fetch_sub(1, Ordering::AcqRel);
    }
}
