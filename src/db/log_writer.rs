//! The log writer: request handlers hand it rows without waiting (through
//! `log_sink`); it writes them in batches (on size, or every flush interval) on its own thread. A
//! failed write keeps the rows and tries again, so no row is lost to a
//! momentary database error; `Flush` (sent at shutdown) writes everything.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::log_sink::{LogCounters, RowObserver};
use super::models::NewLog;
use super::queries::logs;
use super::DbPool;

pub struct LogWriter {
    db: DbPool,
    /// Rows from the request path arrive here without waking this thread;
    /// they are drained on the timer, or when a batch's worth is queued.
    rx: Receiver<NewLog>,
    counters: Arc<LogCounters>,
    /// Each row is counted here as it comes in (off the request path).
    metrics: Arc<dyn RowObserver>,
    buffer: Vec<NewLog>,
    batch_size: usize,
    interval: Duration,
    written: u64,
    retention: Option<Duration>,
    /// Retention and session clean-up run on the instance that leads (one of
    /// those sharing a PostgreSQL database; always, with SQLite).
    leadership: super::leader::Leadership,
    /// Dropped rows already reported in the log.
    reported_dropped: u64,
    /// After a failed write, no new try before this (a burst of wake-ups
    /// must not each wait for a dead database).
    retry_at: Option<Instant>,
    /// This writer's name in the batch markers, and its next batch's number.
    name: String,
    seq: i64,
    /// A write that failed with its outcome unknown: (its batch, the rows it
    /// held at the front of the buffer, and of `flying`). Looked up before
    /// the next write.
    uncertain: Option<(i64, usize, usize)>,
    /// Calls still running, due to be written as in-flight rows.
    flying: Vec<NewLog>,
    /// Rows refused by the database already said in the log, and when.
    refusals_reported: u64,
    refusal_said: Option<Instant>,
    /// The most open requests seen at a check since memory was last trimmed.
    peak_open: usize,
    last_trim: Instant,
}

/// How the log writer writes: rows per batch, the longest a row waits, and
/// how long rows are kept (`None`: for ever).
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub batch_size: usize,
    pub interval: Duration,
    pub retention: Option<Duration>,
}

/// Rows the database refuses are said in the log at most this often.
const REFUSALS_SAID_EVERY: Duration = Duration::from_secs(60);
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
        counters: Arc<LogCounters>,
        metrics: Arc<dyn RowObserver>,
        settings: WriterSettings,
        leadership: super::leader::Leadership,
    ) -> Self {
        let WriterSettings { batch_size, interval, retention } = settings;
        LogWriter {
            name: counters.flights.name().to_string(),
            db,
            rx: queue,
            counters,
            metrics,
            buffer: Vec::with_capacity(batch_size),
            batch_size,
            interval,
            written: 0,
            retention,
            leadership,
            reported_dropped: 0,
            retry_at: None,
            seq: 0,
            uncertain: None,
            flying: Vec::new(),
            refusals_reported: 0,
            refusal_said: None,
            peak_open: 0,
            last_trim: Instant::now(),
        }
    }

    /// After a burst (1,000 open streams, say) glibc keeps the freed memory
    /// in its arenas; once few requests are open again, give it back, so RSS
    /// returns near idle (measured in BENCHMARKS.md). Checked every second
    /// but done only after a burst (or every 30 s when quiet): `malloc_trim`
    /// holds each arena's lock while it works, so it is not run on every
    /// tick under steady traffic.
    fn trim_memory(&mut self) {
        let open = self.counters.open.load(Ordering::Acquire);
        self.peak_open = self.peak_open.max(open);
        let after_burst = self.peak_open > BURST_OPEN;
        if open <= QUIET_OPEN && (after_burst || self.last_trim.elapsed() >= TRIM_AT_LEAST_EVERY) {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks glibc's own allocator state.
            unsafe {
                libc::malloc_trim(0);
            }
            self.peak_open = open;
            self.last_trim = Instant::now();
        }
    }

    fn drain(&mut self) {
        let start = self.buffer.len();
        self.buffer.extend(self.rx.try_iter());
        self.metrics.observe(&self.buffer[start..]);
        let dropped = self.counters.dropped();
        if dropped > self.reported_dropped {
            log::error!(
                "request log: {} rows dropped ({dropped} since start): {} rows were already waiting for the database (LOG_QUEUE_MAX)",
                dropped - self.reported_dropped,
                self.counters.max
            );
            self.reported_dropped = dropped;
        }
    }

    /// How often this writer tells the database its in-flight rows still
    /// run: ten flush intervals, within 1 to 10 s. A row not told of for six
    /// times that is settled as interrupted by the instance that leads.
    fn touch_every(&self) -> Duration {
        (self.interval * 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// Tells the database that this writer's in-flight rows still run, and,
    /// on the instance that leads, settles those of writers gone silent (a
    /// crashed instance's) as interrupted.
    fn watch_flights(&mut self) -> Result<(), String> {
        let now = super::now_ms();
        let stale_before = now - 6 * self.touch_every().as_millis() as i64;
        let mut conn = self.db.get_timeout(super::CONNECT_WAIT).map_err(|e| e.to_string())?;
        if !self.counters.flights.is_empty() {
            logs::touch_in_flight(&mut conn, &self.name, now).map_err(|e| e.to_string())?;
        }
        if self.leadership.leads() {
            let n = logs::settle_interrupted(&mut conn, Some(stale_before)).map_err(|e| e.to_string())?;
            if n > 0 {
                log::warn!(
                    "request log: {n} calls of an instance that stopped mid-call settled as interrupted"
                );
            }
        }
        Ok(())
    }

    /// The scheduled housekeeping (see `housekeeping`), on the instance
    /// that leads, after writing what is buffered. Answers how many log rows went.
    fn maintain(&mut self) -> Result<usize, String> {
        let _ = self.flush();
        if !self.leadership.leads() {
            return Ok(0);
        }
        let mut conn = self.db.get().map_err(|e| e.to_string())?;
        super::housekeeping::run(&mut conn, super::now_ms(), self.retention).map_err(|e| e.to_string())
    }

    /// Rows the database refused were left out of a batch that went in:
    /// counted (`/health`, the metrics), and said in the log at the first
    /// and then at most once a minute, never once per row.
    fn refused(&mut self, refused: logs::Refused) {
        if refused.rows == 0 {
            return;
        }
        self.counters.refused.fetch_add(refused.rows as u64, Ordering::AcqRel);
        self.metrics.refused(refused.rows);
        let total = self.counters.refused();
        if self.refusal_said.is_none_or(|t| t.elapsed() >= REFUSALS_SAID_EVERY) {
            log::error!(
                "request log: the database refused {} rows of a batch ({}); they are dropped and the batch's other rows written ({total} refused since start, /health request_log.refused)",
                total - self.refusals_reported,
                refused.reason.as_deref().unwrap_or("no reason given"),
            );
            self.refusals_reported = total;
            self.refusal_said = Some(Instant::now());
        }
    }

    fn flush(&mut self) -> Result<usize, String> {
        self.drain();
        // Calls running longer than a quarter of a flush interval are
        // written now, so that a crash does not forget them: with a flush
        // every half interval, a call is on disk within three quarters of
        // `LOG_FLUSH_MS` of its start (the promise: nothing that began more
        // than `LOG_FLUSH_MS` before a crash is lost).
        let now = super::now_ms();
        let due = now - self.interval.as_millis() as i64 / 4;
        self.flying.extend(self.counters.flights.due(due, now));
        if self.buffer.is_empty() && self.flying.is_empty() {
            return Ok(0);
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err("waiting before the next try".into());
        }
        let seq = self.seq;
        let (name, uncertain) = (self.name.clone(), self.uncertain);
        let (mut settled, mut settled_flying, mut checked) = (0, 0, false);
        let result =
            self.db.get_timeout(super::CONNECT_WAIT).map_err(|e| e.to_string()).and_then(|mut conn| {
                // The last write failed with its outcome unknown (the connection
                // was cut while it committed): were its rows written after all?
                if let Some((last, n, f)) = uncertain {
                    if logs::batch_written(&mut conn, &name, last).map_err(|e| e.to_string())? {
                        (settled, settled_flying) = (n, f);
                    }
                    checked = true;
                }
                let (rows, flying) = (&self.buffer[settled..], &self.flying[settled_flying..]);
                if rows.is_empty() && flying.is_empty() {
                    return Ok(logs::Refused::default());
                }
                logs::insert_batch(&mut conn, flying, rows, &name, seq).map_err(|e| e.to_string())
            });
        if checked {
            // Settled: written before (dropped here), or not (in this write,
            // whose own outcome the next write looks up if it failed).
            if settled > 0 {
                log::info!("request log: {settled} rows of a write that seemed to fail had been written");
                self.buffer.drain(..settled);
                self.flying.drain(..settled_flying);
                self.written += settled as u64;
                self.counters.queued.fetch_sub(settled, Ordering::AcqRel);
            }
            self.uncertain = None;
        }
        self.seq += 1;
        match result {
            Ok(refused) => {
                self.refused(refused);
                let n = self.buffer.len();
                self.written += n as u64;
                self.buffer.clear();
                self.flying.clear();
                self.counters.queued.fetch_sub(n, Ordering::AcqRel);
                if let Some((since, _)) = self.counters.failing() {
                    log::info!(
                        "request log: the database takes rows again ({n} written, {} s after the first failure)",
                        (super::now_ms() - since) / 1000
                    );
                }
                self.counters.succeeded();
                self.retry_at = None;
                Ok(n)
            }
            Err(e) => {
                if self.counters.failing().is_none() {
                    log::error!(
                        "request log: {} rows not written yet, kept for the next try: {e}",
                        self.buffer.len()
                    );
                }
                self.counters.failed(&e);
                self.retry_at = Some(Instant::now() + self.interval.min(super::CONNECT_WAIT));
                if self.uncertain.is_none() {
                    // Perhaps written: looked up (batch `seq`) before the next write.
                    self.uncertain = Some((seq, self.buffer.len(), self.flying.len()));
                }
                Err(e)
            }
        }
    }
}

impl Actor for LogWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Twice per interval: no row waits longer than half of it, and a
        // call in flight is written early enough (see `flush`).
        ctx.run_interval(self.interval / 2, |act, _| {
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
        ctx.run_interval(self.touch_every(), |act, _| {
            if let Err(e) = act.watch_flights() {
                // Said by the writes themselves when the database is gone.
                log::debug!("request log: calls in flight: {e}");
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.retry_at = None;
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
        self.metrics.observe(std::slice::from_ref(&msg.0));
        self.counters.queued.fetch_add(1, Ordering::AcqRel);
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
        // Asked for (shutdown, tests): tried now, whatever the last failure.
        self.retry_at = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::log_insert::tests::row;
    use std::sync::mpsc::Sender;

    /// Rows nobody watches.
    struct Unwatched;

    impl RowObserver for Unwatched {
        fn observe(&self, _: &[NewLog]) {}
        fn dropped(&self, _: &NewLog) {}
        fn refused(&self, _: usize) {}
    }

    fn writer(dir: &tempfile::TempDir) -> (LogWriter, Sender<NewLog>, DbPool) {
        let db = crate::db::connect(&dir.path().join("w.db")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = LogCounters::new(1000);
        let w = LogWriter::new(
            db.clone(),
            rx,
            counters,
            Arc::new(Unwatched),
            WriterSettings { batch_size: 100, interval: Duration::from_millis(10), retention: None },
            crate::db::leader::Leadership::alone(),
        );
        (w, tx, db)
    }

    fn count(db: &DbPool) -> i64 {
        use diesel::prelude::*;
        let mut c = db.get().unwrap();
        crate::db::schema::request_logs::table.count().get_result(&mut *c).unwrap()
    }

    /// A write whose commit went through though the writer saw an error (the
    /// connection cut while committing) is found by its marker: its rows are
    /// not written twice; one that did not go through is written again.
    #[test]
    fn a_write_of_unknown_outcome_is_looked_up_before_writing_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, tx, db) = writer(&dir);
        for i in 0..5 {
            w.counters.queued.fetch_add(1, Ordering::AcqRel);
            tx.send(row(i)).unwrap();
        }
        w.drain();
        // Committed, and reported failed: the marker is there.
        let name = w.name.clone();
        logs::insert_batch(&mut db.get().unwrap(), &[], &w.buffer[..3], &name, 7).unwrap();
        w.uncertain = Some((7, 3, 0));
        w.seq = 8;
        assert_eq!(w.flush(), Ok(2), "only the two rows the lost write did not hold");
        assert_eq!(count(&db), 5, "none twice");
        assert_eq!(w.counters.queued(), 0);
        assert!(w.uncertain.is_none());

        // Reported failed and not committed: written again.
        for i in 5..9 {
            w.counters.queued.fetch_add(1, Ordering::AcqRel);
            tx.send(row(i)).unwrap();
        }
        w.drain();
        w.uncertain = Some((42, 4, 0));
        assert_eq!(w.flush(), Ok(4));
        assert_eq!(count(&db), 9, "none lost");
    }
}
