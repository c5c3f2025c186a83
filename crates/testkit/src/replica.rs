//! The streaming replicas of the test PostgreSQL (`scripts/replica.sh`,
//! started by `scripts/services.sh` on 127.0.0.1:5433; a second on 5434
//! that the tests that stop one start themselves): where to connect, their
//! replay delay (and [`DelayReset`]), and starting and stopping one.

use std::{path::PathBuf, process::Command, time::Duration};

use sqlx::{Connection, PgConnection};

/// The replica on `port`, `url`'s database (the test database by default).
pub fn url(port: u16, database_url: &str) -> String {
    let name = database_url
        .rsplit_once('/')
        .expect("a database URL has a path")
        .1;
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/replica.sh")
}

/// Runs `scripts/replica.sh <args>`; panics with its output if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/replica.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets the replay delay of the replica on `port` and waits until a new
/// session there shows it.
pub async fn set_delay(port: u16, delay: Duration) {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut c = PgConnection::connect(&url)
        .await
        .expect("the replica answers");
    let ms = delay.as_millis();
    let sql = if ms == 0 {
        "ALTER SYSTEM RESET recovery_min_apply_delay".to_string()
    } else {
        format!("ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .expect("ALTER SYSTEM on the replica");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut c)
        .await
        .expect("reload");
    for _ in 0..200 {
        let mut fresh = PgConnection::connect(&url)
            .await
            .expect("the replica answers");
        let now: String = sqlx::query_scalar(
            "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'",
        )
        .fetch_one(&mut fresh)
        .await
        .expect("read the setting");
        if now.parse::<u128>().ok() == Some(ms) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the replica on {port} did not take a replay delay of {ms} ms");
}

/// Puts the replay delay of the replica on its port back to 0 however the
/// test that changed it ends (panics included).
pub struct DelayReset(pub u16);

impl Drop for DelayReset {
    fn drop(&mut self) {
        let port = self.0;
        // A runtime of its own: a test's runtime may be shutting down.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(set_delay(port, Duration::ZERO));
        })
        .join()
        .expect("the delay was reset");
    }
}
