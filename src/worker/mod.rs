//! The worker: pulls jobs it has capacity for, runs them, keeps its claims fresh, takes over
//! jobs of workers that died, and on shutdown hands its running jobs back. Each job runs
//! through `job::execute` with the worker as its host (records, commands and fencing in the
//! queue store); the worker never builds media itself.
//!
//! Capacity: every job carries an estimated cost in cores ([`Preset::estimated_cost`], from its
//! preset and the room's participant count when it was requested); the worker only claims
//! while its free budget covers the smallest video job, and starts a claimed job once its own
//! cost fits (a larger job waits, claimed, until running jobs end). While a job runs its cost
//! follows the room: every progress report re-estimates it from the participants present, so
//! a room that grows takes budget the worker no longer offers to new jobs.
//!
//! [`Preset::estimated_cost`]: crate::model::Preset::estimated_cost

mod run;

use crate::config::DeliveryConfig;
use crate::job::Outbox;
use crate::model::preset::{MIN_VIDEO_JOB_COST, SHARED_OUTPUT_COST};
use crate::queue::{now_ms, Job, Store, WorkerInfo, HEARTBEAT, LEASE};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use crate::job::MAX_ATTEMPTS;

/// How often the worker looks for work and for commands to its jobs.
const POLL: Duration = Duration::from_millis(250);
/// How long a draining worker waits for its jobs to finalize and hand back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker id (unique in the fleet).
    pub id: String,
    /// CPU budget in cores.
    pub budget: f64,
    /// Where segments are written (`<data>/recordings`).
    pub recordings_dir: PathBuf,
    /// Storage and webhooks.
    pub delivery: DeliveryConfig,
    /// Free space to keep where segments are written (0: no floor).
    pub min_free_bytes: u64,
    /// How long a job's start may take.
    pub start_timeout: Duration,
    /// Whether recordings can show custom view pages (`ROOMCAST_PAGE_ORIGINS` is set).
    pub custom_views: bool,
}

/// A fresh worker id: host name and process id.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:x}", std::process::id(), now_ms() & 0xffff)
}

struct Running {
    cost: f64,
    /// A live recording: may be handed over while it goes on recording.
    recording: bool,
    commands: mpsc::Sender<crate::job::JobCommand>,
    hand_back: Arc<AtomicBool>,
}

/// A worker process's state.
pub struct Worker {
    store: Store,
    cfg: WorkerConfig,
    outbox: Arc<Outbox>,
    running: Mutex<HashMap<String, Running>>,
    draining: AtomicBool,
    /// Free space under the floor (see [`WorkerConfig::min_free_bytes`]).
    disk_low: AtomicBool,
    /// When the worker loop last went round (ms since the epoch; 0 before it started and
    /// after it stopped): readiness.
    alive_ms: Arc<AtomicU64>,
}

impl Worker {
    /// A worker on `store`.
    pub fn new(store: Store, cfg: WorkerConfig) -> crate::Result<Arc<Worker>> {
        let outbox = Arc::new(Outbox::open(&cfg.delivery)?);
        // What a process that died on this disk left half made.
        let spool_dir = outbox
            .deliverer
            .as_ref()
            .map(|d| d.spool.dir().to_path_buf());
        let swept: usize = std::iter::once(cfg.recordings_dir.clone())
            .chain(spool_dir)
            .map(|d| crate::delivery::chunks::sweep_leftovers(&d))
            .sum();
        if swept > 0 {
            tracing::info!(files = swept, "removed files a dead process left half made");
        }
        Ok(Arc::new(Worker {
            store,
            cfg,
            outbox,
            running: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            disk_low: AtomicBool::new(false),
            alive_ms: Arc::default(),
        }))
    }

    /// When the worker loop last went round (ms since the epoch; 0 when it does not run).
    pub fn liveness(&self) -> Arc<AtomicU64> {
        self.alive_ms.clone()
    }

    fn used(&self) -> f64 {
        self.running.lock().unwrap().values().map(|r| r.cost).sum()
    }

    fn info(&self, held: Option<&Job>) -> WorkerInfo {
        let running = self.running.lock().unwrap();
        let mut jobs: Vec<String> = running.keys().cloned().collect();
        let mut used: f64 = running.values().map(|r| r.cost).sum();
        if let Some(h) = held {
            jobs.push(h.id.clone());
            used += h.spec.cost;
        }
        WorkerInfo {
            id: self.cfg.id.clone(),
            budget: self.cfg.budget,
            used,
            jobs,
            heartbeat_ms: now_ms(),
            draining: self.draining.load(Ordering::SeqCst),
            disk_low: self.disk_low.load(Ordering::SeqCst),
        }
    }

    /// Checks the free space where segments are written against the floor; logs changes.
    fn check_disk(&self) {
        if self.cfg.min_free_bytes == 0 {
            return;
        }
        let free = crate::util::free_bytes(&self.cfg.recordings_dir);
        let low = free.is_some_and(|f| f < self.cfg.min_free_bytes);
        let was = self.disk_low.swap(low, Ordering::SeqCst);
        if low && !was {
            warn!(
                free_mib = free.unwrap_or(0) / (1024 * 1024),
                floor_mib = self.cfg.min_free_bytes / (1024 * 1024),
                "free disk space below the floor: taking no new jobs"
            );
        } else if was && !low {
            info!("free disk space above the floor again: taking jobs");
        }
    }

    /// A claimed job starts if it fits, or if nothing runs (a job bigger than the whole
    /// budget still runs, alone) — never while disk space is short.
    fn may_start(&self, cost: f64) -> bool {
        !self.disk_low.load(Ordering::SeqCst)
            && (self.fits(cost) || self.running.lock().unwrap().is_empty())
    }

    /// Whether to claim the next job: the smallest video job fits, or — on a worker that
    /// runs jobs and is nearly full — the job at the head of the queue does (one fed from a
    /// room's running composite costs only its outputs).
    async fn may_claim(&self) -> bool {
        if self.fits(MIN_VIDEO_JOB_COST) {
            return true;
        }
        if !self.fits(SHARED_OUTPUT_COST) || self.running.lock().unwrap().is_empty() {
            return false;
        }
        let Ok(ids) = self.store.waiting().await else {
            return false;
        };
        let Some(id) = ids.first() else {
            return false;
        };
        matches!(self.store.get_job(id).await, Ok(Some(j)) if self.fits(j.spec.cost))
    }

    /// Cores free on each other worker that takes jobs (none when the store does not answer).
    async fn others_free(&self) -> Vec<f64> {
        match self.store.workers().await {
            Ok(ws) => ws
                .iter()
                .filter(|w| w.id != self.cfg.id)
                .map(|w| w.free())
                .filter(|f| *f > 0.0)
                .collect(),
            Err(e) => {
                debug!(error = %e, "workers not read");
                Vec::new()
            }
        }
    }

    fn fits(&self, cost: f64) -> bool {
        !self.disk_low.load(Ordering::SeqCst) && self.used() + cost <= self.cfg.budget + 1e-9
    }

    /// Advertises the worker and refreshes its claims; false if the store did not answer.
    async fn heartbeat(&self, held: Option<&Job>) -> bool {
        match self.store.heartbeat(&self.info(held)).await {
            Ok(()) => true,
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                false
            }
        }
    }

    /// Re-estimates a running job's cost (the room grew or shrank).
    fn set_cost(&self, job: &str, cost: f64) {
        if let Some(r) = self.running.lock().unwrap().get_mut(job) {
            r.cost = cost;
        }
    }

    fn start(self: &Arc<Self>, job: Job, tasks: &mut tokio::task::JoinSet<()>) {
        let (tx, rx) = mpsc::channel(32);
        let hand_back = Arc::new(AtomicBool::new(false));
        self.running.lock().unwrap().insert(
            job.id.clone(),
            Running {
                cost: job.spec.cost,
                recording: job.spec.kind == crate::queue::JobKind::Recording,
                commands: tx,
                hand_back: hand_back.clone(),
            },
        );
        let me = self.clone();
        tasks.spawn(async move {
            let id = job.id.clone();
            run::run_job(&me, job, rx, hand_back).await;
            me.running.lock().unwrap().remove(&id);
        });
    }

    /// Runs until `shutdown` resolves, then drains: claims nothing more and hands every running
    /// job back for another worker — a recording that another worker has room for goes on
    /// until that worker records it (make before break), any other job first ends, finalizes
    /// and delivers its segment.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        info!(worker = %self.cfg.id, budget = self.cfg.budget, store = self.store.kind(),
            "worker started");
        let mut tasks = tokio::task::JoinSet::new();
        let delivery = tokio::spawn(run::delivery_loop(self.clone()));
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = tokio::time::Instant::now() - HEARTBEAT;
        let mut held: Option<Job> = None;
        let mut health = StoreHealth::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
                Some(_) = tasks.join_next() => {}
            }
            self.alive_ms.store(now_ms(), Ordering::Relaxed);
            self.check_disk();
            if last_beat.elapsed() >= HEARTBEAT {
                last_beat = tokio::time::Instant::now();
                let reachable = self.heartbeat(held.as_ref()).await;
                health.observe(reachable);
                // After the store was away every worker's claims look stale: reclaiming
                // waits one lease, so each holder refreshes its own first.
                if held.is_none() && health.may_reclaim() && self.fits(MIN_VIDEO_JOB_COST) {
                    match self.store.reclaim(&self.cfg.id).await {
                        Ok(jobs) => {
                            for job in jobs {
                                if self.running.lock().unwrap().contains_key(&job.id) {
                                    debug!(job = %job.id, "reclaimed a job that runs here");
                                    continue;
                                }
                                info!(job = %job.id, previous = ?job.worker, "taking over a job");
                                self.start(job, &mut tasks);
                            }
                        }
                        Err(e) => warn!(error = %e, "reclaim failed"),
                    }
                }
            }
            if !health.reachable() {
                continue;
            }
            if let Some(job) = held.take() {
                if self.may_start(job.spec.cost) {
                    self.start(job, &mut tasks);
                    self.heartbeat(None).await;
                } else {
                    held = Some(job);
                    continue;
                }
            }
            while self.may_claim().await {
                match self.store.claim(&self.cfg.id).await {
                    Ok(Some(job)) => {
                        info!(job = %job.id, room = %job.spec.room_id, kind = ?job.spec.kind,
                            cost = job.spec.cost, "claimed a job");
                        if self.may_start(job.spec.cost) {
                            self.start(job, &mut tasks);
                            self.heartbeat(None).await;
                        } else {
                            held = Some(job);
                            self.heartbeat(held.as_ref()).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!(error = %e, "claim failed");
                        break;
                    }
                }
            }
        }
        self.alive_ms.store(0, Ordering::Relaxed);
        info!(worker = %self.cfg.id, "draining");
        self.draining.store(true, Ordering::SeqCst);
        if let Some(job) = held.take() {
            // Claimed but never started: straight back to the queue.
            if let Err(e) = self.store.hand_back(&self.cfg.id, &job).await {
                warn!(error = %e, job = %job.id, "hand-back failed");
            }
        }
        self.heartbeat(None).await;
        // Recordings go on while another worker with room starts each (make before break);
        // the rest end their segment now and go back to the queue.
        let mut room = self.others_free().await;
        let senders: Vec<_> = self
            .running
            .lock()
            .unwrap()
            .values()
            .map(|r| {
                // A run that cannot hand over (any more) takes `HandOver` as a stop.
                r.hand_back.store(true, Ordering::SeqCst);
                let taker = room.iter_mut().find(|f| **f >= r.cost);
                let command = match taker {
                    Some(free) if r.recording => {
                        *free -= r.cost;
                        crate::job::JobCommand::HandOver
                    }
                    _ => crate::job::JobCommand::Stop,
                };
                (r.commands.clone(), command)
            })
            .collect();
        for (tx, command) in senders {
            let _ = tx.send(command).await;
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("jobs did not finish draining in time");
        }
        // Last chance for what the jobs queued.
        run::deliver_pending(&self, Duration::from_secs(5)).await;
        delivery.abort();
        self.heartbeat(None).await;
        info!(worker = %self.cfg.id, "worker stopped");
    }
}

/// Whether the queue store answers, as the heartbeat sees it: logged once when it goes away
/// and once when it is back (not on every failed call).
#[derive(Debug, Default)]
struct StoreHealth {
    down_since: Option<tokio::time::Instant>,
    back_since: Option<tokio::time::Instant>,
}

impl StoreHealth {
    fn observe(&mut self, reachable: bool) {
        let now = tokio::time::Instant::now();
        match (reachable, self.down_since) {
            (false, None) => {
                warn!(
                    "queue store unreachable: running jobs go on recording; records, \
                       commands and claims catch up when it is back"
                );
                self.down_since = Some(now);
            }
            (true, Some(since)) => {
                info!(
                    away_s = since.elapsed().as_secs_f64(),
                    "queue store reachable again"
                );
                self.down_since = None;
                self.back_since = Some(now);
            }
            _ => {}
        }
    }

    fn reachable(&self) -> bool {
        self.down_since.is_none()
    }

    fn may_reclaim(&self) -> bool {
        self.reachable() && self.back_since.is_none_or(|t| t.elapsed() >= LEASE)
    }
}
