//! PostgreSQL as the independent witness of the work done on it:
//! statements executed (`pg_stat_statements`) and connections open
//! (`pg_stat_activity`), for one database only, over a connection of its
//! own. The benchmark checks its own figures against these. SQLite has no
//! such witness.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{postgres::PgConnectOptions, postgres::PgPoolOptions, ConnectOptions, PgPool};

const APP: &str = "gistfans_bench_witness";

/// The database's own counters, when the database is PostgreSQL.
pub struct Witness {
    pg: Option<(PgPool, String)>,
    /// The same witness on each streaming replica the servers read from.
    replicas: Vec<Witness>,
}

impl Witness {
    /// Connects to `url` if it is PostgreSQL with `pg_stat_statements`.
    pub async fn connect(url: Option<&str>) -> Witness {
        let Some(url) = url.filter(|u| u.starts_with("postgres")) else {
            return Witness {
                pg: None,
                replicas: Vec::new(),
            };
        };
        let Ok(opts) = PgConnectOptions::from_str(url) else {
            return Witness {
                pg: None,
                replicas: Vec::new(),
            };
        };
        let db = opts.get_database().unwrap_or("postgres").to_string();
        let pool = match PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts.application_name(APP))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("bench: no PostgreSQL witness ({e})");
                return Witness {
                    pg: None,
                    replicas: Vec::new(),
                };
            }
        };
        // A hot standby refuses the CREATE (read-only) but has the view
        // once the primary has the extension.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await;
        if sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .execute(&pool)
            .await
            .is_err()
        {
            eprintln!(
                "bench: pg_stat_statements is not loaded; statements per page load will be missing"
            );
            return Witness {
                pg: None,
                replicas: Vec::new(),
            };
        }
        Witness {
            pg: Some((pool, db)),
            replicas: Vec::new(),
        }
    }

    /// Also witnesses each of `urls` (the servers' `DB_REPLICA_URLS`).
    pub async fn with_replicas(mut self, urls: &[String]) -> Witness {
        for url in urls {
            self.replicas
                .push(Box::pin(Witness::connect(Some(url))).await);
        }
        self
    }

    /// Statements the replicas executed in the database so far (their
    /// pollers' included: that is work done there); `None` without any.
    pub async fn replica_statements(&self) -> Option<i64> {
        let mut total = None;
        for r in &self.replicas {
            if let Some(n) = r.statements().await {
                total = Some(total.unwrap_or(0) + n);
            }
        }
        total
    }

    /// Statements PostgreSQL executed in the database so far (the witness's own excluded).
    pub async fn statements(&self) -> Option<i64> {
        let (pool, db) = self.pg.as_ref()?;
        sqlx::query_scalar(
            "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1 AND s.query NOT LIKE '%pg_stat%'",
        )
        .bind(db)
        .fetch_one(pool)
        .await
        .ok()
    }

    /// Client connections open to the database now from `application`
    /// (the server names its manager pool `gistfans` and its baseline pool
    /// `gistfans_baseline`), or from anyone but the witness for `None`.
    pub async fn connections(&self, application: Option<&str>) -> Option<i64> {
        let (pool, db) = self.pg.as_ref()?;
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2 \
             AND backend_type = 'client backend' AND ($3::text IS NULL OR application_name = $3)",
        )
        .bind(db)
        .bind(APP)
        .bind(application)
        .fetch_one(pool)
        .await
        .ok()
    }

    /// Samples `application`'s connections every 100 ms until the returned
    /// sampler is finished; it holds the peak.
    pub fn sample_connections(self: &Arc<Self>, application: Option<&'static str>) -> PeakSampler {
        let peak = Arc::new(AtomicI64::new(-1));
        let (w, p) = (self.clone(), peak.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Some(n) = w.connections(application).await {
                    p.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PeakSampler { peak, task }
    }
}

/// A running connection sampler.
pub struct PeakSampler {
    peak: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    /// Stops sampling; the peak seen, if any sample succeeded.
    pub fn finish(self) -> Option<i64> {
        self.task.abort();
        Some(self.peak.load(Ordering::Relaxed)).filter(|p| *p >= 0)
    }
}

/// CPU-heavy queries running back to back on a PostgreSQL server, to slow
/// it down for everyone; they stop when this is dropped.
pub struct SlowDown {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SlowDown {
    /// Starts `workers` connections to the `postgres` database of the
    /// server at `url` (another database than the measured one, so their
    /// statements count in none of its figures), each summing a long
    /// series in a loop.
    pub async fn start(url: &str, workers: u32) -> Result<SlowDown, sqlx::Error> {
        let opts = PgConnectOptions::from_str(url)?
            .database("postgres")
            .application_name("gistfans_bench_slowdown")
            // They are slow on purpose.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(workers)
            .connect_with(opts)
            .await?;
        let tasks = (0..workers)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    loop {
                        let burn = sqlx::query("SELECT sum(i) FROM generate_series(1, 3000000) i");
                        if burn.execute(&pool).await.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Ok(SlowDown { tasks })
    }
}

impl Drop for SlowDown {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
