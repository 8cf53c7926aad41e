//! The refresher re-checks keys against `/v1/user/info`: every
//! `AUTO_REFRESH_INTERVAL` seconds, and on demand from the admin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde::Serialize;

use super::actor::{ApplyChecks, CheckSummary, PoolActor};
use super::check::{check_key, checked_in_order};
use super::{KeyState, PoolShared};
use crate::db::now_ms;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshStatus {
    pub enabled: bool,
    pub interval_secs: u64,
    pub last_run: Option<i64>,
    pub next_run: Option<i64>,
    pub last_error: Option<String>,
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
}

pub struct RefresherSettings {
    pub interval: Option<Duration>,
    pub invalid_recheck: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
}

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
        }
    }

    fn run(&mut self, only: Option<Vec<i64>>, scheduled: bool) -> ResponseActFuture<Self, CheckSummary> {
        let now = now_ms();
        let snapshot = self.shared.snapshot();
        let recheck_ms = self.invalid_recheck.as_millis() as i64;
        let mut skipped = 0;
        let targets: Vec<(i64, String, String)> = snapshot
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
        let client = self.client.clone();
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let (concurrency, timeout) = (self.concurrency, self.timeout);
        let work = async move {
            let endpoints = &shared.user_info;
            let outcomes = checked_in_order(
                targets,
                |t| t.2.clone(),
                concurrency,
                |(id, secret, base)| {
                    let client = &client;
                    async move { (id, check_key(client, &base, &secret, timeout, endpoints).await) }
                },
            )
            .await;
            pool.send(ApplyChecks { outcomes, manual: !scheduled }).await
        };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let mut status = (**act.status.load()).clone();
            status.last_run = Some(now_ms());
            if scheduled {
                status.next_run = act.interval.map(|i| now_ms() + i.as_millis() as i64);
            }
            let summary = match result {
                Ok(mut s) => {
                    s.skipped = skipped;
                    status.last_error = (s.unchanged > 0).then(|| {
                        format!(
                            "{} of {} checks failed for a passing reason; those keys were left as they were",
                            s.unchanged, s.checked
                        )
                    });
                    s
                }
                Err(e) => {
                    status.last_error = Some(format!("pool actor unavailable: {e}"));
                    CheckSummary::default()
                }
            };
            act.status.store(Arc::new(status));
            summary
        }))
    }
}

impl Actor for Refresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(interval) = self.interval {
            ctx.run_interval(interval, |act, ctx| {
                log::info!("refreshing keys (scheduled)");
                ctx.spawn(act.run(None, true).map(|summary, _, _| {
                    log::info!("scheduled refresh: {summary:?}");
                }));
            });
        }
    }
}

/// Re-check keys now: all of them, or the ones listed.
#[derive(Message)]
#[rtype(result = "CheckSummary")]
pub struct RefreshNow(pub Option<Vec<i64>>);

impl Handler<RefreshNow> for Refresher {
    type Result = ResponseActFuture<Self, CheckSummary>;

    fn handle(&mut self, msg: RefreshNow, _: &mut Context<Self>) -> Self::Result {
        self.run(msg.0, false)
    }
}
