//! The refresher re-checks keys against `/v1/user/info`: every
//! `AUTO_REFRESH_INTERVAL` seconds, and on demand from the admin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::oneshot;

use super::actor::{ApplyChecks, CheckSummary, PoolActor};
use super::check::{check_key, checked_in_order, read_model_list};
use super::{KeyId, KeyState, PoolShared};
use crate::db::now_ms;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshStatus {
    pub enabled: bool,
    pub interval_secs: u64,
    pub last_run: Option<i64>,
    pub next_run: Option<i64>,
    pub last_error: Option<String>,
    /// A refresh of every key in progress.
    pub running: Option<Running>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Running {
    /// Epoch ms; shown as RFC 3339 like every other time of the API.
    #[serde(serialize_with = "as_iso")]
    pub started: i64,
    /// Asked by the owner (not the schedule).
    pub manual: bool,
    pub total: usize,
    pub checked: usize,
}

pub struct Refresher {
    client: awc::Client,
    pool: Addr<PoolActor>,
    shared: Arc<PoolShared>,
    status: Arc<ArcSwap<RefreshStatus>>,
    interval: Option<Duration>,
    invalid_recheck: Duration,
    concurrency: usize,
    timeout: Duration,
    rate: Option<f64>,
    /// The scheduled refresh runs only where this says so (one instance of
    /// several on one database).
    leadership: crate::db::leader::Leadership,
    /// While a refresh of every key runs: who waits for its summary.
    full_run: Option<Vec<oneshot::Sender<CheckSummary>>>,
}

/// How often the upstream's model list is read again (every instance reads
/// it: its metrics' model labels); while none has been read, it is looked
/// for every 2 s (a failed read is tried again after a minute).
const MODEL_LIST_EVERY: Duration = Duration::from_secs(600);
const MODEL_LIST_LOOK: Duration = Duration::from_secs(2);
const MODEL_LIST_RETRY: Duration = Duration::from_secs(60);

pub struct RefresherSettings {
    pub interval: Option<Duration>,
    pub invalid_recheck: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Checks started per second in a refresh of every key (`None`: as fast
    /// as `concurrency` allows).
    pub rate: Option<f64>,
    pub leadership: crate::db::leader::Leadership,
}

fn as_iso<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::db::iso(Some(*ms)).unwrap_or_default())
}

/// Outcomes are written (and the pool republished) this many at a time, so a
/// long refresh shows its progress and no transaction holds 100,000 rows.
const CHUNK: usize = 500;

impl Refresher {
    pub fn new(
        client: awc::Client,
        pool: Addr<PoolActor>,
        shared: Arc<PoolShared>,
        status: Arc<ArcSwap<RefreshStatus>>,
        settings: RefresherSettings,
    ) -> Self {
        let next_run = settings.interval.map(|i| now_ms() + i.as_millis() as i64);
        status.store(Arc::new(RefreshStatus {
            enabled: settings.interval.is_some(),
            interval_secs: settings.interval.map(|i| i.as_secs()).unwrap_or(0),
            next_run,
            ..Default::default()
        }));
        Refresher {
            client,
            pool,
            shared,
            status,
            interval: settings.interval,
            invalid_recheck: settings.invalid_recheck,
            concurrency: settings.concurrency,
            timeout: settings.timeout,
            rate: settings.rate,
            leadership: settings.leadership,
            full_run: None,
        }
    }

    /// Reads the upstream's model list with a usable key, when it is due.
    fn read_model_list_when_due(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let read_at = self.shared.served_read_at();
        if read_at > 0 && now - read_at < MODEL_LIST_EVERY.as_millis() as i64 {
            return;
        }
        if now - self.shared.listing_tried_at() < MODEL_LIST_RETRY.as_millis() as i64 {
            // The last read failed a moment ago: not at every look.
            return;
        }
        let snapshot = self.shared.snapshot();
        let Some(key) = snapshot.keys.iter().find(|k| k.state() == KeyState::Active).cloned() else { return };
        drop(snapshot);
        let (client, timeout, shared) = (self.client.clone(), self.timeout, self.shared.clone());
        ctx.spawn(
            async move { read_model_list(&shared, &client, &key.base_url, &key.secret, timeout).await }
                .into_actor(self),
        );
    }

    fn update_status(status: &ArcSwap<RefreshStatus>, f: impl FnOnce(&mut RefreshStatus)) {
        let mut s = RefreshStatus::clone(&status.load());
        f(&mut s);
        status.store(Arc::new(s));
    }

    /// Checks `only` (a few keys the owner named: at once), or every key
    /// (paced at `rate`, written in chunks, with its progress in the status).
    fn run(&mut self, only: Option<Vec<KeyId>>, scheduled: bool) -> ResponseActFuture<Self, CheckSummary> {
        let now = now_ms();
        let snapshot = self.shared.snapshot();
        let recheck_ms = self.invalid_recheck.as_millis() as i64;
        let mut skipped = 0;
        let full = only.is_none();
        let targets: Vec<(KeyId, String, String)> = snapshot
            .keys
            .iter()
            .filter(|k| only.as_ref().is_none_or(|ids| ids.contains(&k.id)))
            .filter(|k| {
                // Dead keys are not forgotten, only asked about less often.
                let due = !scheduled
                    || k.state() != KeyState::Invalid
                    || now - k.last_checked.load(Ordering::Relaxed) >= recheck_ms;
                if !due {
                    skipped += 1;
                }
                due
            })
            .map(|k| (k.id, k.secret.clone(), k.base_url.to_string()))
            .collect();
        drop(snapshot);
        if full {
            let total = targets.len();
            Self::update_status(&self.status, |s| {
                s.running = Some(Running { started: now, manual: !scheduled, total, checked: 0 })
            });
        }
        let client = self.client.clone();
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let status = self.status.clone();
        let (concurrency, timeout) = (self.concurrency, self.timeout);
        let pacer = Pacer::new(if full { self.rate } else { None });
        let work = async move {
            let endpoints = &shared.user_info;
            let mut summary = CheckSummary { skipped, ..Default::default() };
            for chunk in targets.chunks(CHUNK) {
                let outcomes = checked_in_order(
                    chunk.to_vec(),
                    |t| t.2.clone(),
                    concurrency,
                    |(id, secret, base)| {
                        let (client, pacer) = (&client, &pacer);
                        async move {
                            pacer.wait().await;
                            (id, check_key(client, &base, &secret, timeout, endpoints).await)
                        }
                    },
                )
                .await;
                summary.add(&pool.send(ApplyChecks { outcomes, manual: !scheduled }).await?);
                if full {
                    Self::update_status(&status, |s| {
                        if let Some(r) = &mut s.running {
                            r.checked += chunk.len();
                        }
                    });
                }
            }
            Ok::<_, actix::MailboxError>(summary)
        };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let (summary, last_error) = match result {
                Ok(s) => {
                    let passing = (s.unchanged > 0).then(|| {
                        format!(
                            "{} of {} checks failed for a passing reason; those keys were left as they were",
                            s.unchanged, s.checked
                        )
                    });
                    (s, passing)
                }
                Err(e) => (CheckSummary::default(), Some(format!("pool actor unavailable: {e}"))),
            };
            let next_run = act.interval.filter(|_| scheduled).map(|i| now_ms() + i.as_millis() as i64);
            Self::update_status(&act.status, |status| {
                status.last_run = Some(now_ms());
                status.last_error = last_error;
                if full {
                    status.running = None;
                }
                if scheduled {
                    status.next_run = next_run;
                }
            });
            summary
        }))
    }

    /// Starts a refresh of every key, or joins the one running: two never run
    /// at once, and whoever asked gets the summary when it ends.
    fn full(
        &mut self,
        waiter: Option<oneshot::Sender<CheckSummary>>,
        scheduled: bool,
        ctx: &mut Context<Self>,
    ) {
        if let Some(waiters) = &mut self.full_run {
            if scheduled {
                log::info!("scheduled refresh: the previous one is still running; skipped");
            }
            waiters.extend(waiter);
            return;
        }
        self.full_run = Some(waiter.into_iter().collect());
        ctx.spawn(self.run(None, scheduled).map(move |summary, act, _| {
            if scheduled {
                log::info!("scheduled refresh: {summary:?}");
            }
            for w in act.full_run.take().unwrap_or_default() {
                let _ = w.send(summary.clone());
            }
        }));
    }
}

/// Spaces the starts of checks `1/rate` apart (a pause does not earn a burst).
struct Pacer {
    gap: Option<Duration>,
    next: std::cell::Cell<Instant>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        let gap = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        Pacer { gap, next: std::cell::Cell::new(Instant::now()) }
    }

    async fn wait(&self) {
        let Some(gap) = self.gap else { return };
        let slot = self.next.get().max(Instant::now());
        self.next.set(slot + gap);
        actix_rt::time::sleep_until(slot.into()).await;
    }
}

impl Actor for Refresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.read_model_list_when_due(ctx);
        ctx.run_interval(MODEL_LIST_LOOK, |act, ctx| act.read_model_list_when_due(ctx));
        if let Some(interval) = self.interval {
            ctx.run_interval(interval, |act, ctx| {
                if !act.leadership.leads() {
                    log::debug!("scheduled refresh: another instance runs it");
                    return;
                }
                log::info!("refreshing keys (scheduled)");
                act.full(None, true, ctx);
            });
        }
    }
}

/// Re-check keys now: all of them, or the ones listed. Answers at once with
/// the progress of the refresh of every key (which this request started or
/// joined); the summary follows on `done` when the checks end, whether or not
/// anyone still waits for it.
#[derive(Message)]
#[rtype(result = "Started")]
pub struct RefreshNow(pub Option<Vec<KeyId>>);

pub struct Started {
    pub progress: Option<Running>,
    pub done: oneshot::Receiver<CheckSummary>,
}

impl Started {
    pub async fn summary(self) -> CheckSummary {
        self.done.await.unwrap_or_default()
    }
}

impl Handler<RefreshNow> for Refresher {
    type Result = MessageResult<RefreshNow>;

    fn handle(&mut self, msg: RefreshNow, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, done) = oneshot::channel();
        match msg.0 {
            None => self.full(Some(tx), false, ctx),
            Some(ids) => {
                ctx.spawn(self.run(Some(ids), false).map(move |summary, _, _| {
                    let _ = tx.send(summary);
                }));
            }
        }
        MessageResult(Started { progress: self.status.load().running.clone(), done })
    }
}
