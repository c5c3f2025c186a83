//! The advisor's rules, each against a quiet status nudged past one threshold.

use super::*;
use crate::{cache::CacheStats, leak::SuspectedLeak, metrics::Percentiles};

fn quiet() -> Status {
    Status {
        active_connections: 1,
        idle_connections: 1,
        pending_requests: 0,
        total_queries: 1000,
        cache_hit_rate: 90.0,
        average_response_time: 10.0,
        max_connections: 10,
        min_connections: 2,
        database_queries: 100,
        cache_hits: 900,
        cache_misses: 100,
        stale_served: 0,
        errors: 0,
        timeouts: 0,
        single_flight_joins: 0,
        in_flight: 0,
        batches: 0,
        batched_keys: 0,
        circuit_opens: 0,
        circuit: CircuitState::Closed,
        leaks_detected: 0,
        suspected_leaks: vec![],
        connection_budget: None,
        connection_limit_refusals: 0,
        seconds_since_limit_refusal: None,
        shared: None,
        changes: Default::default(),
        consistency: Default::default(),
        replicas: None,
        tuning: crate::tuning::TuningStatus {
            pool: None,
            ttl_classes: None,
            events: vec![],
            changes: 0,
        },
        latency_ms: Percentiles {
            p50: 5.0,
            p95: 20.0,
            p99: 50.0,
            max: 60.0,
            count: 1000,
        },
        acquire_wait_ms: Percentiles::default(),
        acquire_wait_histogram: vec![],
        acquire_wait_sum_ms: 0.0,
        latency_histogram: vec![],
        latency_sum_ms: 0.0,
        cache: CacheStats::default(),
        refresh: Default::default(),
        uptime_seconds: 1.0,
    }
}

fn kinds(s: &Status) -> Vec<AdviceKind> {
    advise(s, &AdvisorConfig::default())
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

fn fired(s: &Status, kind: AdviceKind) -> Option<Advice> {
    advise(s, &AdvisorConfig::default())
        .into_iter()
        .find(|a| a.kind == kind)
}

#[test]
fn a_healthy_status_gets_no_advice() {
    assert!(kinds(&quiet()).is_empty());
}

#[test]
fn low_hit_rate_recommends_a_longer_ttl_only_below_70_percent() {
    let mut s = quiet();
    s.cache_hit_rate = 70.0;
    assert!(fired(&s, AdviceKind::IncreaseCacheTtl).is_none());
    s.cache_hit_rate = 69.9;
    let a = fired(&s, AdviceKind::IncreaseCacheTtl).unwrap();
    assert_eq!(
        (a.observed, a.threshold, a.severity),
        (69.9, 70.0, Severity::Recommendation)
    );
    assert!(fired(&s, AdviceKind::LowCacheEfficiency).is_none());
}

#[test]
fn cache_advice_waits_for_enough_lookups() {
    let mut s = quiet();
    s.cache_hit_rate = 10.0;
    s.cache_hits = 5;
    s.cache_misses = 45;
    assert!(kinds(&s).is_empty());
}

#[test]
fn very_low_hit_rate_alerts() {
    let mut s = quiet();
    s.cache_hit_rate = 39.0;
    let a = fired(&s, AdviceKind::LowCacheEfficiency).unwrap();
    assert!(a.is_alert());
    assert_eq!(a.threshold, 40.0);
}

#[test]
fn slow_average_recommends_optimising_only_above_500_ms() {
    let mut s = quiet();
    s.average_response_time = 500.0;
    assert!(fired(&s, AdviceKind::OptimizeQueries).is_none());
    s.average_response_time = 612.5;
    let a = fired(&s, AdviceKind::OptimizeQueries).unwrap();
    assert_eq!((a.observed, a.threshold), (612.5, 500.0));
}

#[test]
fn slow_p99_alerts_only_above_its_threshold() {
    let mut s = quiet();
    s.latency_ms.p99 = 1000.0;
    assert!(fired(&s, AdviceKind::SlowResponses).is_none());
    s.latency_ms.p99 = 1500.0;
    assert!(fired(&s, AdviceKind::SlowResponses).unwrap().is_alert());
}

#[test]
fn many_pending_requests_recommend_a_larger_pool() {
    let mut s = quiet();
    s.pending_requests = 10;
    assert!(fired(&s, AdviceKind::IncreasePoolSize).is_none());
    s.pending_requests = 11;
    let a = fired(&s, AdviceKind::IncreasePoolSize).unwrap();
    assert_eq!(a.observed, 11.0);
    // The knob and a value: ten more for eleven waiting on ten slots.
    let setting = a.setting.unwrap();
    assert_eq!(
        (setting.knob, setting.value.as_str()),
        ("DB_POOL_MAX", "20")
    );
    // Within the database's budget when it is known.
    s.connection_budget = Some(15);
    assert_eq!(
        fired(&s, AdviceKind::IncreasePoolSize)
            .unwrap()
            .setting
            .unwrap()
            .value,
        "15"
    );
}

#[test]
fn self_tuning_takes_over_the_advice_it_can_act_on() {
    let mut s = quiet();
    s.pending_requests = 11;
    s.cache_hit_rate = 50.0;
    let pool = |limit| crate::tuning::PoolTuningStatus {
        limit,
        min: 2,
        max: 10,
        baseline_ms: None,
        service_ms: None,
        last_reason: None,
    };
    s.tuning.pool = Some(pool(6));
    s.tuning.ttl_classes = Some(vec![]);
    // The pool can still grow by itself, and TTLs already adapt.
    assert!(fired(&s, AdviceKind::IncreasePoolSize).is_none());
    assert!(fired(&s, AdviceKind::IncreaseCacheTtl).is_none());
    // At its maximum, the advice is to raise the maximum.
    s.tuning.pool = Some(pool(10));
    assert_eq!(
        fired(&s, AdviceKind::IncreasePoolSize)
            .unwrap()
            .setting
            .unwrap()
            .knob,
        "DB_POOL_MAX"
    );
    s.tuning.ttl_classes = None;
    let ttl = fired(&s, AdviceKind::IncreaseCacheTtl)
        .unwrap()
        .setting
        .unwrap();
    assert_eq!(
        (ttl.knob, ttl.value.as_str()),
        ("DB_CACHE_ADAPTIVE_TTL", "true")
    );
}

#[test]
fn an_exhausted_pool_is_a_critical_alert() {
    let mut s = quiet();
    s.active_connections = 10;
    assert!(
        fired(&s, AdviceKind::PoolExhausted).is_none(),
        "busy but nobody waiting"
    );
    s.pending_requests = 1;
    let a = fired(&s, AdviceKind::PoolExhausted).unwrap();
    assert_eq!(a.severity, Severity::Critical);
    s.active_connections = 9;
    assert!(fired(&s, AdviceKind::PoolExhausted).is_none());
}

#[test]
fn an_open_circuit_and_leaks_alert() {
    let mut s = quiet();
    s.circuit = CircuitState::Open;
    s.suspected_leaks = vec![SuspectedLeak {
        key: "report".into(),
        held_ms: 20_000,
    }];
    let k = kinds(&s);
    assert!(k.contains(&AdviceKind::CircuitOpen) && k.contains(&AdviceKind::ConnectionLeak));
    assert!(fired(&s, AdviceKind::ConnectionLeak)
        .unwrap()
        .message
        .contains("report"));
}

#[test]
fn stale_entries_found_by_the_consistency_monitor_alert_with_the_key() {
    let mut s = quiet();
    s.consistency.within = vec![crate::consistency::WithinStatus {
        within: "1s".into(),
        within_ms: 1000,
        checked: 200,
        stale: 0,
        absent: 0,
        skipped: 0,
        raced: 0,
        errors: 0,
        nines: Some(2.3),
        nines_at_least: true,
    }];
    assert!(fired(&s, AdviceKind::StaleEntries).is_none(), "none stale");
    s.consistency.within[0].stale = 2;
    s.consistency.last_stale = Some("agg:7:7".into());
    let a = fired(&s, AdviceKind::StaleEntries).unwrap();
    assert!(a.is_alert() && a.observed == 2.0, "{a:?}");
    assert!(
        a.message.contains("agg:7:7") && a.message.contains("1s"),
        "{}",
        a.message
    );
}
