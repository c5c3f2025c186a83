//! Prometheus metrics: per-route request counts and latencies (recorded by a
//! middleware), and the manager's status as gauges, set at scrape time.

use std::{collections::HashMap, sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder (installed once).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .expect("non-empty buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // application's): then this one still renders, from no data.
            let _ = metrics::set_global_recorder(recorder);
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the recorder's histograms are drained without a scrape.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Drains the histograms' pending samples into their buckets every few
/// seconds. The recorder only does that upkeep when it renders, so with no
/// scraper every request's sample would stay in memory for ever. A plain
/// thread: the recorder is process-wide and may be created outside a runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread: memory grows until /metrics is scraped");
    }
}

/// A request being counted and timed: its route label (the matched
/// route, a fixed set) and method label, and when it started.
pub struct RequestTimer {
    route: Option<MatchedPath>,
    method: &'static str,
    started: Instant,
}

impl RequestTimer {
    /// Starts timing `req`.
    pub fn start(req: &Request) -> Self {
        Self {
            route: req.extensions().get::<MatchedPath>().cloned(),
            method: method_label(req.method()),
            started: Instant::now(),
        }
    }

    /// Counts the request by method, route and status, and records its time.
    pub fn finish(self, resp: &Response) {
        let route = self.route.as_ref().map_or("unmatched", |p| p.as_str());
        let handles = RouteHandles::get(route, self.method, resp.status().as_u16());
        handles.0.increment(1);
        handles.1.record(self.started.elapsed().as_secs_f64());
    }
}

/// The metric handles of one (route, method, status): a request counter
/// and the (route, method) latency histogram.
#[derive(Clone)]
struct RouteHandles(metrics::Counter, metrics::Histogram);

/// Handles by route, then (method, status). Looked up by borrowed keys, so
/// a request allocates nothing here once its combination has been seen;
/// the macros would build and hash an owned, labelled key every time (2-3%
/// of the trivial route's CPU, issue 22). Bounded: routes and methods are
/// fixed sets, statuses are the server's own.
type HandleCache = std::sync::RwLock<HashMap<Box<str>, Vec<(&'static str, u16, RouteHandles)>>>;

impl RouteHandles {
    fn get(route: &str, method: &'static str, status: u16) -> RouteHandles {
        static CACHE: OnceLock<HandleCache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let find = |list: &Vec<(&'static str, u16, RouteHandles)>| {
            list.iter()
                .find(|(m, s, _)| *m == method && *s == status)
                .map(|(_, _, h)| h.clone())
        };
        if let Some(h) = cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .and_then(find)
        {
            return h;
        }
        let route_label = route.to_owned();
        let status_label = status.to_string();
        let handles = RouteHandles(
            metrics::counter!("http_requests_total", "method" => method, "route" => route_label.clone(), "status" => status_label),
            metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route_label),
        );
        cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(Box::from(route))
            .or_default()
            .push((method, status, handles.clone()));
        handles
    }
}

/// The method as a label: one of a fixed set. The method token is chosen by
/// the client (any token up to the header limit is valid HTTP), so it never
/// becomes a label as it is: every unknown method is `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Renders the metrics: the recorder's, then the manager's status (counters
/// as counters, levels as gauges, latency and wait as histograms).
pub fn render(
    handle: &PrometheusHandle,
    s: &hpdb::Status,
    preload: &gistfans_data::PreloadStats,
    writes: &[gistfans_data::PhaseTiming],
) -> String {
    use metrics::{counter, gauge};
    gauge!("hpdb_connections", "state" => "active").set(s.active_connections as f64);
    gauge!("hpdb_connections", "state" => "idle").set(s.idle_connections as f64);
    gauge!("hpdb_max_connections").set(s.max_connections as f64);
    gauge!("hpdb_pending_requests").set(s.pending_requests as f64);
    gauge!("hpdb_cache_hit_rate_percent").set(s.cache_hit_rate);
    gauge!("hpdb_cache_entries").set(s.cache.entries as f64);
    gauge!("hpdb_cache_bytes").set(s.cache.weighted_bytes as f64);
    gauge!("hpdb_circuit_open").set(if s.circuit == hpdb::CircuitState::Closed {
        0.0
    } else {
        1.0
    });
    // The manager counts; these mirror its counters (they restart from zero
    // after a `resetMetrics`, which Prometheus reads as a counter reset).
    for (name, value) in [
        ("hpdb_queries_total", s.total_queries),
        ("hpdb_database_queries_total", s.database_queries),
        ("hpdb_cache_hits_total", s.cache_hits),
        ("hpdb_cache_misses_total", s.cache_misses),
        ("hpdb_stale_served_total", s.stale_served),
        ("hpdb_single_flight_joins_total", s.single_flight_joins),
        ("hpdb_errors_total", s.errors),
        ("hpdb_timeouts_total", s.timeouts),
        ("hpdb_circuit_opens_total", s.circuit_opens),
        ("hpdb_leaks_detected_total", s.leaks_detected),
        (
            "hpdb_connection_limit_refusals_total",
            s.connection_limit_refusals,
        ),
    ] {
        counter!(name).absolute(value);
    }
    refresh_metrics(&s.refresh);
    if let Some(r) = &s.shared {
        shared_metrics(r);
    }
    tuning_metrics(&s.tuning);
    change_metrics(&s.changes);
    consistency_metrics(&s.consistency);
    if let Some(r) = &s.replicas {
        replica_metrics(r);
    }
    for (outcome, value) in [
        ("issued", preload.issued),
        ("used", preload.used),
        ("wasted", preload.wasted),
    ] {
        counter!("gistfans_preloads_total", "outcome" => outcome).absolute(value);
    }
    let mut text = handle.render();
    if let Some(r) = &s.shared {
        histogram_text(
            &mut text,
            "hpdb_shared_delivery_lag_seconds",
            "Publish to apply, invalidations from other instances (pushed or replayed).",
            &r.delivery_lag_histogram,
            r.delivery_lag_sum_ms,
        );
    }
    histogram_text(
        &mut text,
        "hpdb_query_latency_seconds",
        "End-to-end time of execute_query calls.",
        &s.latency_histogram,
        s.latency_sum_ms,
    );
    for (i, w) in writes.iter().enumerate() {
        // One family, a series per phase (a fixed set of labels).
        labelled_histogram_text(
            &mut text,
            "gistfans_write_phase_seconds",
            (i == 0).then_some(
                "Where writes' time went: prepare, queue, admission, lock, snapshot, statement, cache (with delivery), refill, total.",
            ),
            ("phase", w.phase),
            &w.times.buckets,
            w.times.sum_ms,
        );
    }
    histogram_text(
        &mut text,
        "hpdb_acquire_wait_seconds",
        "Time executions waited for admission and a connection.",
        &s.acquire_wait_histogram,
        s.acquire_wait_sum_ms,
    );
    text
}

/// Background refreshes: started (ahead of expiry, or revalidating an
/// expired entry), reads served while refreshing, skipped, wasted.
fn refresh_metrics(r: &hpdb::RefreshStatus) {
    use metrics::{counter, gauge};
    counter!("hpdb_refreshes_total", "trigger" => "ahead").absolute(r.ahead);
    counter!("hpdb_refreshes_total", "trigger" => "revalidate").absolute(r.revalidations);
    for (name, value) in [
        (
            "hpdb_served_while_refreshing_total",
            r.served_while_refreshing,
        ),
        ("hpdb_refreshes_skipped_total", r.skipped),
        ("hpdb_refreshes_wasted_total", r.wasted),
    ] {
        counter!(name).absolute(value);
    }
    gauge!("hpdb_refreshes_running").set(r.running as f64);
}

/// Self-tuning: the pool's automatic limit, each TTL class's TTL (classes
/// are bounded by hpdb, 64 and an overflow), and how many changes.
fn tuning_metrics(t: &hpdb::TuningStatus) {
    use metrics::{counter, gauge};
    counter!("hpdb_tuning_changes_total").absolute(t.changes);
    if let Some(p) = &t.pool {
        gauge!("hpdb_tuning_pool_limit").set(p.limit as f64);
        if let Some(ms) = p.baseline_ms {
            gauge!("hpdb_tuning_pool_baseline_seconds").set(ms / 1000.0);
        }
    }
    for class in t.ttl_classes.iter().flatten() {
        let ttl = class.ttl_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
        gauge!("hpdb_tuning_ttl_seconds", "class" => class.class.clone()).set(ttl);
    }
}

/// The change stream's figures (hpdb::changes): its mode (1 for the
/// current one), the slot's lag (leader only), and its counters.
fn change_metrics(c: &hpdb::changes::ChangeStatus) {
    use hpdb::changes::ChangeMode;
    use metrics::{counter, gauge};
    for (name, mode) in [
        ("off", ChangeMode::Off),
        ("starting", ChangeMode::Starting),
        ("standby", ChangeMode::Standby),
        ("leader", ChangeMode::Leader),
        ("unavailable", ChangeMode::Unavailable),
        ("data_version", ChangeMode::DataVersion),
    ] {
        gauge!("hpdb_changes_mode", "mode" => name).set(f64::from(u8::from(c.mode == mode)));
    }
    if let Some(bytes) = c.lag_bytes {
        gauge!("hpdb_changes_lag_bytes").set(bytes as f64);
    }
    if let Some(seconds) = c.lag_seconds {
        gauge!("hpdb_changes_lag_seconds").set(seconds);
    }
    gauge!("hpdb_changes_wal_keep_unbounded").set(f64::from(u8::from(c.wal_keep_unbounded)));
    for (name, times) in [
        (
            "hpdb_changes_commit_to_received_seconds",
            &c.commit_to_received_ms,
        ),
        (
            "hpdb_changes_commit_to_invalidated_seconds",
            &c.commit_to_invalidated_ms,
        ),
    ] {
        if let Some(p) = times {
            for (quantile, ms) in [("0.5", p.p50), ("0.99", p.p99), ("1", p.max)] {
                gauge!(name, "quantile" => quantile).set(ms / 1000.0);
            }
        }
    }
    for (name, value) in [
        ("hpdb_changes_transactions_total", c.transactions),
        ("hpdb_changes_own_skipped_total", c.own_skipped),
        ("hpdb_changes_tags_invalidated_total", c.tags_invalidated),
        ("hpdb_changes_epochs_total", c.epochs),
        ("hpdb_changes_mapping_failures_total", c.mapping_failures),
        ("hpdb_changes_slots_recreated_total", c.slots_recreated),
        ("hpdb_changes_polls_total", c.polls),
        ("hpdb_changes_foreign_commits_total", c.foreign_commits),
    ] {
        counter!(name).absolute(value);
    }
}

/// Reads on replicas (hpdb's `replica`): per replica (labelled by its
/// position in `DB_REPLICA_URLS`: bounded by the configuration) its replay
/// lag, whether it is in rotation, reads routed, waits and failures; and
/// the reads that ran on the primary instead, by why.
fn replica_metrics(r: &hpdb::ReplicasStatus) {
    use metrics::{counter, gauge};
    for (i, replica) in r.replicas.iter().enumerate() {
        let index = i.to_string();
        gauge!("hpdb_replica_lag_bytes", "replica" => index.clone()).set(replica.lag_bytes as f64);
        gauge!("hpdb_replica_lag_seconds", "replica" => index.clone())
            .set(replica.lag_ms as f64 / 1000.0);
        gauge!("hpdb_replica_in_rotation", "replica" => index.clone())
            .set(f64::from(u8::from(replica.in_rotation)));
        for (name, value) in [
            ("hpdb_replica_reads_total", replica.routed),
            ("hpdb_replica_waits_total", replica.waited),
            ("hpdb_replica_failures_total", replica.failed),
            ("hpdb_replica_poll_failures_total", replica.poll_failures),
        ] {
            counter!(name, "replica" => index.clone()).absolute(value);
        }
    }
    for (why, value) in [
        ("behind", r.fallbacks_behind),
        ("unavailable", r.fallbacks_unavailable),
        ("shared_unanswered", r.fallbacks_unanswered),
        ("replica_failed", r.retried_on_primary),
    ] {
        counter!("hpdb_replica_fallbacks_total", "why" => why).absolute(value);
    }
    gauge!("hpdb_replica_floors").set(r.floors as f64);
    let p = &r.routing_ms;
    for (quantile, ms) in [("0.5", p.p50), ("0.99", p.p99), ("1", p.max)] {
        gauge!("hpdb_replica_routing_seconds", "quantile" => quantile).set(ms / 1000.0);
    }
}

/// The consistency monitor's figures (hpdb::consistency), per delay
/// (`within`: the two configured delays, so two label values): entries
/// checked, found stale, not checked and why, and the nines (a lower bound
/// while none was stale: `hpdb_consistency_nines_at_least` is 1).
fn consistency_metrics(c: &hpdb::ConsistencyStatus) {
    use metrics::{counter, gauge};
    counter!("hpdb_consistency_sampled_total").absolute(c.sampled);
    counter!("hpdb_consistency_dropped_total").absolute(c.dropped);
    gauge!("hpdb_consistency_pending").set(c.pending as f64);
    for w in &c.within {
        let within = w.within.clone();
        counter!("hpdb_consistency_checks_total", "within" => within.clone()).absolute(w.checked);
        counter!("hpdb_consistency_stale_total", "within" => within.clone()).absolute(w.stale);
        for (reason, value) in [
            ("absent", w.absent),
            ("skipped", w.skipped),
            ("raced", w.raced),
            ("error", w.errors),
        ] {
            counter!("hpdb_consistency_unchecked_total", "within" => within.clone(), "reason" => reason)
                .absolute(value);
        }
        if let Some(nines) = w.nines {
            gauge!("hpdb_consistency_nines", "within" => within.clone()).set(nines);
            gauge!("hpdb_consistency_nines_at_least", "within" => within)
                .set(f64::from(u8::from(w.nines_at_least)));
        }
    }
}

/// The shared level's figures (Redis L2 and the bus), when there is one.
fn shared_metrics(r: &hpdb::SharedStatus) {
    use metrics::{counter, gauge};
    gauge!("hpdb_shared_bus_current").set(f64::from(u8::from(r.bus_current)));
    gauge!("hpdb_shared_circuit_open").set(if r.circuit == hpdb::CircuitState::Closed {
        0.0
    } else {
        1.0
    });
    gauge!("hpdb_shared_pending_invalidations").set(r.pending as f64);
    gauge!("hpdb_shared_peers").set(r.peers as f64);
    gauge!("hpdb_shared_redis_budget_seconds").set(r.redis_budget_ms / 1000.0);
    gauge!("hpdb_shared_excluded").set(f64::from(u8::from(r.excluded)));
    for (name, value) in [
        ("hpdb_shared_hits_total", r.hits),
        ("hpdb_shared_misses_total", r.misses),
        ("hpdb_shared_stores_total", r.stores),
        ("hpdb_shared_refused_stale_total", r.refused_stale),
        ("hpdb_shared_leases_won_total", r.leases_won),
        ("hpdb_shared_lease_waits_total", r.lease_waits),
        ("hpdb_shared_published_total", r.published),
        ("hpdb_shared_received_total", r.received),
        ("hpdb_shared_replayed_total", r.replayed),
        ("hpdb_shared_flushes_total", r.flushes),
        ("hpdb_shared_reconnects_total", r.reconnects),
        ("hpdb_shared_replaced_total", r.replaced),
        ("hpdb_shared_lock_waits_total", r.lock_waits),
        ("hpdb_shared_delivery_waits_total", r.delivery_waits),
        ("hpdb_shared_delivery_timeouts_total", r.delivery_timeouts),
        ("hpdb_shared_redis_commands_total", r.redis_commands),
        ("hpdb_shared_redis_failures_total", r.redis_failures),
        ("hpdb_shared_redis_timeouts_total", r.redis_timeouts),
        ("hpdb_shared_redis_slow_total", r.redis_slow),
    ] {
        counter!(name).absolute(value);
    }
}

/// Appends one histogram in the Prometheus text format. Written by hand:
/// the exporter builds histograms only from samples recorded through it,
/// and the manager already keeps these as buckets (cumulative, in ms).
fn histogram_text(out: &mut String, name: &str, help: &str, buckets: &[hpdb::Bucket], sum_ms: f64) {
    labelled_histogram_text(out, name, Some(help), ("", ""), buckets, sum_ms);
}

/// [`histogram_text`] for one series of a family with a label (`label.0`
/// empty: none); the family's HELP and TYPE lines only with `help`.
fn labelled_histogram_text(
    out: &mut String,
    name: &str,
    help: Option<&str>,
    label: (&str, &str),
    buckets: &[hpdb::Bucket],
    sum_ms: f64,
) {
    use std::fmt::Write;
    if let Some(help) = help {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let (first, only) = if label.0.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!("{}=\"{}\",", label.0, label.1),
            format!("{{{}=\"{}\"}}", label.0, label.1),
        )
    };
    let mut count = 0;
    for b in buckets {
        let le = if b.le_ms.is_finite() {
            (b.le_ms / 1000.0).to_string()
        } else {
            "+Inf".to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{{first}le=\"{le}\"}} {}", b.count);
        count = b.count;
    }
    let _ = writeln!(
        out,
        "{name}_sum{only} {}\n{name}_count{only} {count}",
        sum_ms / 1000.0
    );
}
