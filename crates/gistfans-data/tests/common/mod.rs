//! What the data layer's tests share: a seeded database (SQLite file or
//! PostgreSQL) with the service over it.

use gistfans_data::{
    migrate,
    seed::{seed, SeedConfig},
    DataAggregationService, Db, Preload,
};
use hpdb::ManagerConfig;
use testkit::TempDir;

/// A seeded database and the service over it (preloading off).
pub struct Env {
    pub service: DataAggregationService,
    pub url: String,
    /// The PostgreSQL database, if this is one (dropped with the `Env`).
    pub pg: Option<testkit::pg::TestDatabase>,
    _dir: Option<TempDir>,
}

impl Env {
    /// A SQLite file of its own, seeded with the small demo data.
    pub async fn sqlite(config: ManagerConfig) -> Env {
        let dir = TempDir::new("gf_data");
        let url = format!("sqlite://{}/gf.db", dir.path().display());
        Env {
            service: service(&url, config).await,
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL database of its own, seeded with the small demo data.
    pub async fn postgres(config: ManagerConfig) -> Env {
        let pg = testkit::pg::TestDatabase::create().await;
        Env {
            service: service(&pg.url, config).await,
            url: pg.url.clone(),
            pg: Some(pg),
            _dir: None,
        }
    }
}

async fn service(url: &str, config: ManagerConfig) -> DataAggregationService {
    migrate(url, None).await.unwrap();
    seed(url, &SeedConfig::small(), false).await.unwrap();
    let db = Db::connect(url, config).await.unwrap();
    DataAggregationService::new(db).with_preload(Preload::Off)
}
