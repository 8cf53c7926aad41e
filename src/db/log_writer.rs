//! The log writer: request handlers hand it rows without waiting; it writes
//! them in batches (on size, or every flush interval) on its own thread. A
//! failed write keeps the rows and tries again, so no row is lost to a
//! momentary database error; `Flush` (sent at shutdown) writes everything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::models::NewLog;
use super::queries::logs;
use super::DbPool;

/// Where log rows go, and how many requests are still open (shutdown waits
/// for them, so that no row arrives after the final flush). A handle: every
/// request holds one, and cloning it is one reference count.
#[derive(Clone)]
pub struct LogSink(Arc<SinkInner>);

struct SinkInner {
    writer: Addr<LogWriter>,
    /// Lock-free hand-over: sending wakes nobody, so a request costs no
    /// cross-thread wake-up (a syscall and a context switch each).
    tx: Sender<NewLog>,
    queued: Arc<AtomicUsize>,
    batch: usize,
    open: Arc<AtomicUsize>,
}

impl LogSink {
    /// The sink, and the receiving end for the log writer.
    pub fn new(
        writer: Addr<LogWriter>,
        tx: Sender<NewLog>,
        queued: Arc<AtomicUsize>,
        open: Arc<AtomicUsize>,
        batch: usize,
    ) -> Self {
        LogSink(Arc::new(SinkInner { writer, tx, queued, batch: batch.max(1), open }))
    }

    pub fn push(&self, row: NewLog) {
        let sink = &*self.0;
        // Counted before it is sent: the writer subtracts what it takes, and
        // must never see the queue below zero (it could take the row first).
        let queued = sink.queued.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        match sink.tx.send(row) {
            Ok(()) => {
                // Wake the writer once per batch; the timer takes the rest.
                if queued.is_multiple_of(sink.batch) {
                    sink.writer.do_send(Wake);
                }
            }
            // Only after the writer is gone (a shutdown cut short): say so.
            Err(e) => {
                sink.queued.fetch_sub(1, Ordering::AcqRel);
                log::error!("request log row lost: the log writer has stopped ({e})")
            }
        }
    }

    pub fn open_requests(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Rows handed over and not yet taken by the log writer.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
    }

    pub fn opened(&self) {
        self.0.open.fetch_add(1, Ordering::AcqRel);
    }

    pub fn closed(&self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Past this many unwritten rows (the database has been down for a long
/// time), the oldest are dropped with an error in the log, to bound memory.
const MAX_BUFFERED: usize = 1_000_000;

pub struct LogWriter {
    db: DbPool,
    /// Rows from the request path arrive here without waking this thread;
    /// they are drained on the timer, or when a batch's worth is queued.
    rx: Receiver<NewLog>,
    queued: Arc<AtomicUsize>,
    /// Requests in flight (the sink's counter), for `trim_memory`.
    open: Arc<AtomicUsize>,
    buffer: Vec<NewLog>,
    batch_size: usize,
    interval: Duration,
    written: u64,
    retention: Option<Duration>,
    /// The most open requests seen at a check since memory was last trimmed.
    peak_open: usize,
    last_trim: std::time::Instant,
}

/// How often retention and session clean-up run.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);
/// How often the writer looks at the number of open requests, to hand freed
/// heap memory back to the system once a burst is over.
const TRIM_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Without a burst, freed memory is still handed back this often when quiet.
const TRIM_AT_LEAST_EVERY: Duration = Duration::from_secs(30);
/// Open requests at or below which the proxy counts as quiet, and above which
/// (at a check) as in a burst.
const QUIET_OPEN: usize = 16;
const BURST_OPEN: usize = 64;

impl LogWriter {
    pub fn new(
        db: DbPool,
        queue: Receiver<NewLog>,
        queued: Arc<AtomicUsize>,
        open: Arc<AtomicUsize>,
        batch_size: usize,
        interval: Duration,
        retention: Option<Duration>,
    ) -> Self {
        LogWriter {
            db,
            rx: queue,
            queued,
            open,
            buffer: Vec::with_capacity(batch_size),
            batch_size,
            interval,
            written: 0,
            retention,
            peak_open: 0,
            last_trim: std::time::Instant::now(),
        }
    }

    /// After a burst (1,000 open streams, say) glibc keeps the freed memory
    /// in its arenas; once few requests are open again, give it back, so RSS
    /// returns near idle (measured in BENCHMARKS.md). Checked every second
    /// but done only after a burst (or every 30 s when quiet): `malloc_trim`
    /// holds each arena's lock while it works, so it is not run on every
    /// tick under steady traffic.
    fn trim_memory(&mut self) {
        let open = self.open.load(Ordering::Acquire);
        self.peak_open = self.peak_open.max(open);
        let after_burst = self.peak_open > BURST_OPEN;
        if open <= QUIET_OPEN && (after_burst || self.last_trim.elapsed() >= TRIM_AT_LEAST_EVERY) {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks glibc's own allocator state.
            unsafe {
                libc::malloc_trim(0);
            }
            self.peak_open = open;
            self.last_trim = std::time::Instant::now();
        }
    }

    fn drain(&mut self) {
        let before = self.buffer.len();
        self.buffer.extend(self.rx.try_iter());
        self.queued.fetch_sub(self.buffer.len() - before, Ordering::AcqRel);
    }

    /// Deletes log rows (and their rollup) past the retention age, and
    /// expired admin sessions. Answers how many log rows went.
    fn maintain(&mut self) -> Result<usize, String> {
        let _ = self.flush();
        let mut conn = self.db.get().map_err(|e| e.to_string())?;
        let now = super::now_ms();
        let _ = super::queries::sessions_q::delete_expired(&mut conn, now);
        let Some(keep) = self.retention else { return Ok(0) };
        let cutoff = now - keep.as_millis().min(i64::MAX as u128) as i64;
        let n = logs::delete_before(&mut conn, cutoff).map_err(|e| e.to_string())?;
        if n > 0 {
            log::info!("retention: deleted {n} request log rows older than {} days", keep.as_secs() / 86_400);
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<usize, String> {
        self.drain();
        if self.buffer.is_empty() {
            return Ok(0);
        }
        let result = self
            .db
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| logs::insert_batch(&mut conn, &self.buffer).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                let n = self.buffer.len();
                self.written += n as u64;
                self.buffer.clear();
                Ok(n)
            }
            Err(e) => {
                log::error!("log writer: {} rows not written yet: {e}", self.buffer.len());
                if self.buffer.len() > MAX_BUFFERED {
                    let excess = self.buffer.len() - MAX_BUFFERED;
                    log::error!("log writer: dropping the {excess} oldest rows");
                    self.buffer.drain(..excess);
                }
                Err(e)
            }
        }
    }
}

impl Actor for LogWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, _| {
            let _ = act.flush();
        });
        let run = |act: &mut Self, _: &mut Context<Self>| {
            if let Err(e) = act.maintain() {
                log::error!("retention: {e}");
            }
        };
        ctx.run_later(Duration::from_secs(5), run);
        ctx.run_interval(MAINTENANCE_EVERY, run);
        ctx.run_interval(TRIM_CHECK_EVERY, |act, _| act.trim_memory());
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        let _ = self.flush();
        Running::Stop
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub NewLog);

impl Handler<Record> for LogWriter {
    type Result = ();

    fn handle(&mut self, msg: Record, _: &mut Context<Self>) {
        self.buffer.push(msg.0);
        if self.buffer.len() >= self.batch_size {
            let _ = self.flush();
        }
    }
}

/// A batch's worth of rows is queued: write them now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

impl Handler<Wake> for LogWriter {
    type Result = ();

    fn handle(&mut self, _: Wake, _: &mut Context<Self>) {
        let _ = self.flush();
    }
}

/// Writes every buffered row now; answers how many rows were written in all.
#[derive(Message)]
#[rtype(result = "Result<u64, String>")]
pub struct Flush;

impl Handler<Flush> for LogWriter {
    type Result = Result<u64, String>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        self.flush()?;
        Ok(self.written)
    }
}

/// Runs retention now; answers how many log rows were deleted.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Maintain;

impl Handler<Maintain> for LogWriter {
    type Result = Result<usize, String>;

    fn handle(&mut self, _: Maintain, _: &mut Context<Self>) -> Self::Result {
        self.maintain()
    }
}
