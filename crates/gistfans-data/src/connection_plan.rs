//! The pools' plan against PostgreSQL's connection limit, checked at
//! start-up: a pool that can never fit stops start-up, one that fits only if
//! other clients leave room is a warning and an advisor alert.

use hpdb::Manager;
use sqlx::Postgres;

use crate::error::DataError;

/// Checks the pools' plan against PostgreSQL's connection limit.
///
/// This process may open up to `manager max + baseline max` connections
/// (the baseline pool only when its routes are used). PostgreSQL keeps
/// `superuser_reserved_connections` (and, from 16, `reserved_connections`)
/// out of everyone else's reach. A manager maximum beyond what PostgreSQL
/// allows at all can never work: start-up fails and names both numbers.
/// A plan that fits only if other clients leave room is logged as a
/// warning, and the manager's advisor alerts on it for as long as it runs.
pub(crate) async fn check(manager: &Manager<Postgres>, baseline_max: u32) -> Result<(), DataError> {
    let (limit, reserved, in_use): (i32, i32, i64) = manager
        .execute_query(
            "connection_plan",
            hpdb::QueryOptions::uncached(),
            |conn| {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT current_setting('max_connections')::int, \
                                current_setting('superuser_reserved_connections')::int \
                                + coalesce(current_setting('reserved_connections', true)::int, 0), \
                                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
                    )
                    .fetch_one(conn)
                    .await
                })
            },
        )
        .await
        .map(|r| *r)
        .map_err(|e| DataError::setup("cannot read PostgreSQL's connection limit", e))?;
    let plan = plan_connections(
        manager.config().pool.max_connections,
        baseline_max,
        limit,
        reserved,
        in_use,
        manager.pool().size(),
    );
    if let Some(budget) = plan.budget {
        manager.set_connection_budget(budget);
    }
    match plan.verdict {
        PlanVerdict::Fits => Ok(()),
        PlanVerdict::Tight(message) => {
            tracing::warn!("{message}");
            Ok(())
        }
        PlanVerdict::Impossible(message) => Err(DataError::Invalid(message)),
    }
}

/// What [`plan_connections`] found.
#[derive(Debug, PartialEq)]
struct Plan {
    /// Connections the database can give the manager's pool.
    budget: Option<u32>,
    verdict: PlanVerdict,
}

#[derive(Debug, PartialEq)]
enum PlanVerdict {
    Fits,
    Tight(String),
    Impossible(String),
}

/// The arithmetic of [`check`]: `ours` is how many of the
/// `in_use` client connections are this manager's own.
fn plan_connections(
    manager_max: u32,
    baseline_max: u32,
    limit: i32,
    reserved: i32,
    in_use: i64,
    ours: u32,
) -> Plan {
    let usable = i64::from(limit - reserved).max(0);
    let others = (in_use - i64::from(ours)).max(0);
    let free = (usable - others).max(0);
    let budget = u32::try_from((free - i64::from(baseline_max)).max(0)).ok();
    let planned = i64::from(manager_max) + i64::from(baseline_max);
    let pool_max = hpdb::env::POOL_MAX.name;
    let verdict = if i64::from(manager_max) > usable {
        PlanVerdict::Impossible(format!(
            "{pool_max} is {manager_max}, but PostgreSQL accepts at most {usable} ordinary connections \
             (max_connections {limit} less {reserved} reserved): lower {pool_max} or raise max_connections"
        ))
    } else if planned > free {
        PlanVerdict::Tight(format!(
            "this server may open {planned} connections (pool {manager_max} + baseline {baseline_max}) \
             but PostgreSQL has {free} free ({usable} usable, {others} held by other clients): \
             under load, other clients may be refused; lower {pool_max} or raise max_connections"
        ))
    } else {
        PlanVerdict::Fits
    };
    Plan { budget, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_larger_than_the_database_allows_is_refused() {
        let plan = plan_connections(150, 150, 100, 3, 5, 2);
        assert!(
            matches!(plan.verdict, PlanVerdict::Impossible(ref m) if m.contains("150") && m.contains("97")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_plan_that_needs_other_clients_to_leave_room_is_tight() {
        // 97 usable, 40 held by others: 57 free, and we may open 60.
        let plan = plan_connections(30, 30, 100, 3, 42, 2);
        assert!(matches!(plan.verdict, PlanVerdict::Tight(_)), "{plan:?}");
        assert_eq!(plan.budget, Some(27));
    }

    #[test]
    fn the_defaults_fit_a_default_postgresql() {
        let plan = plan_connections(10, 10, 100, 3, 7, 2);
        assert_eq!(plan.verdict, PlanVerdict::Fits);
        assert_eq!(plan.budget, Some(82));
    }
}
