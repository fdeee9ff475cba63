//! `roomcast serve`, `api` and `worker`: the control API and/or a worker on the embedded queue
//! or on Redis, until SIGINT/SIGTERM (which drains the worker).

use super::{runtime, shutdown_signal};
use crate::config::{DeliveryConfig, ServerConfig};
use crate::queue::Store;
use crate::worker::{default_worker_id, Worker, WorkerConfig};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Options of `serve` and `api`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Redis URL (default: ROOMCAST_REDIS_URL; unset = embedded queue).
    #[arg(long)]
    pub redis: Option<String>,
    /// API address:port (default: ROOMCAST_LISTEN or 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Run without ROOMCAST_API_TOKEN (the token is then "dev"); for local trials only.
    #[arg(long)]
    pub insecure_dev: bool,
}

/// Which parts of the service a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Control API and a worker (`serve`).
    Both,
    /// Control API only, on Redis (`api`).
    Api,
    /// Worker only, on Redis (`worker`).
    Worker,
}

/// `serve` (API + worker), `api` (API only, Redis) and `worker` (worker only, Redis).
pub fn serve(opts: ServeArgs, role: Role) -> Result<()> {
    let with_api = role != Role::Worker;
    let with_worker = role != Role::Api;
    let mut cfg = ServerConfig::from_env()?;
    if let Some(r) = opts.redis {
        cfg.redis_url = Some(r.into());
    }
    if let Some(l) = opts.listen {
        cfg.listen = l;
    }
    let delivery = DeliveryConfig::from_env()?;
    if !(with_api && with_worker) && cfg.redis_url.is_none() {
        return Err(Error::Config {
            setting: "ROOMCAST_REDIS_URL".into(),
            message: "`roomcast api` and `roomcast worker` share jobs through Redis: set \
                      ROOMCAST_REDIS_URL or --redis (or run `roomcast serve` for one machine)"
                .into(),
            code: crate::codes::Code::Generic,
        });
    }
    let rt = runtime()?;
    rt.block_on(async move {
        if with_api {
            warn_open_allow_lists(&cfg);
        }
        let store = match &cfg.redis_url {
            Some(url) => Store::redis(url.expose()).await,
            None => Store::embedded(&cfg.data_dir.join("queue")),
        }?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        // A worker alone serves its probes on ROOMCAST_METRICS_LISTEN: bound before it starts,
        // so an address that cannot be had stops it here.
        let probe_listener = match (&cfg.metrics_listen, role) {
            (Some(at), Role::Worker) => Some(crate::api::bind_scrape(at).await?),
            _ => None,
        };
        let mut liveness = None;
        let worker = if with_worker {
            let w = Worker::new(
                store.clone(),
                WorkerConfig {
                    id: std::env::var("ROOMCAST_WORKER_ID")
                        .ok()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(default_worker_id),
                    budget: cfg.cpu_budget,
                    recordings_dir: absolute(&cfg.data_dir.join("recordings"))?,
                    delivery: delivery.clone(),
                    min_free_bytes: cfg.min_free_bytes,
                    start_timeout: cfg.start_timeout,
                    custom_views: !cfg.page_origins.is_empty(),
                },
            )?;
            liveness = Some(w.liveness());
            Some(tokio::spawn(w.run(stopped())))
        } else {
            None
        };
        if with_api {
            let hooks = delivery.webhook_queue()?;
            let st = crate::api::state(
                store.clone(),
                cfg.clone(),
                hooks,
                delivery
                    .storage
                    .iter()
                    .chain(delivery.backup.iter())
                    .cloned()
                    .collect(),
                liveness.clone(),
                opts.insecure_dev,
            )?;
            tokio::spawn(crate::api::queue_janitor(st.clone(), !with_worker));
            crate::api::serve(st, stopped()).await?;
        }
        // The probes answer until the drain is over: an orchestrator that saw them fail while
        // the worker drains would kill it.
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let probes = probe_listener.map(|l| {
            let st = crate::api::probe_state(store.clone(), cfg.clone(), liveness.clone());
            tokio::spawn(crate::api::serve_probes(st, l, async move {
                let _ = drained_rx.await;
            }))
        });
        if let Some(w) = worker {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "worker task ended abnormally");
            }
        }
        let _ = drained_tx.send(());
        if let Some(p) = probes {
            if let Err(e) = p.await {
                tracing::error!(error = %e, "probe task ended abnormally");
            }
        }
        Ok(())
    })
}

/// Says once, at start-up, which allow-lists are not set: without them a request may make
/// workers connect to any address they can reach, local services included.
fn warn_open_allow_lists(cfg: &ServerConfig) {
    let open: Vec<&str> = [
        ("ROOMCAST_JANUS_HOSTS", cfg.janus_hosts.is_set()),
        ("ROOMCAST_RTMP_HOSTS", cfg.rtmp_hosts.is_set()),
    ]
    .into_iter()
    .filter(|(_, set)| !set)
    .map(|(name, _)| name)
    .collect();
    if !open.is_empty() {
        tracing::warn!(
            unset = %open.join(", "),
            "no allow-list for the hosts requests may name: workers will connect to any \
             address they can reach (set host names or CIDR ranges in production)"
        );
    }
}

/// `p` made absolute (created first): job records name segment files by absolute path, so a
/// worker taking a job over can find the previous worker's file on a shared or local disk.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
    std::fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
}
