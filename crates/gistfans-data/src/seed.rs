//! `gistfans seed`: deterministic demo data with a realistic skew.
//!
//! A fixed RNG seed gives the same users, posts, stars and follows every
//! time (timestamps are relative to the day of seeding). Who writes, who is
//! starred and who is followed follow Zipf laws over user ids, so user 1 is
//! the most popular, as on any social site; star times spread over the past
//! year, after the post they star. Rows go in by bulk insert: multi-row
//! `INSERT` in one transaction on SQLite, `UNNEST` arrays on PostgreSQL.

use std::collections::HashSet;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::IndexedRandom, RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use sqlx::{Connection, QueryBuilder};

use crate::{
    db::{sqlite_options, Backend},
    error::DataError,
    model::now,
};

/// Sizes and the RNG seed.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    /// Users (default 10,000).
    pub users: i64,
    /// Posts (default 100,000).
    pub posts: i64,
    /// Stars (default 1,000,000).
    pub stars: i64,
    /// Follows (default 200,000).
    pub follows: i64,
    /// RNG seed (default 42).
    pub seed: u64,
    /// Zipf exponent of popularity (default 1.1).
    pub skew: f64,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            users: 10_000,
            posts: 100_000,
            stars: 1_000_000,
            follows: 200_000,
            seed: 42,
            skew: 1.1,
        }
    }
}

impl SeedConfig {
    /// A small data set for tests.
    pub fn small() -> Self {
        Self {
            users: 60,
            posts: 300,
            stars: 2_000,
            follows: 600,
            ..Self::default()
        }
    }
}

/// What was inserted.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    /// Users.
    pub users: usize,
    /// Posts.
    pub posts: usize,
    /// Stars (after removing duplicates).
    pub stars: usize,
    /// Follows (after removing duplicates and self-follows).
    pub follows: usize,
}

/// A post row: id, author, title, language, content, created at.
type PostRow = (i64, i64, String, String, String, i64);

struct Data {
    users: Vec<(i64, String, String, String, i64)>,
    posts: Vec<PostRow>,
    stars: Vec<(i64, i64, i64)>,
    follows: Vec<(i64, i64, i64)>,
}

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Guido", "Radia",
    "Bjarne", "Hedy",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen",
    "Perlman", "Lamarr",
];
const LANGS: [&str; 10] = [
    "rust",
    "go",
    "python",
    "typescript",
    "c",
    "sql",
    "haskell",
    "zig",
    "ruby",
    "kotlin",
];
const WHAT: [&str; 10] = [
    "parser",
    "rate limiter",
    "LRU cache",
    "thread pool",
    "retry loop",
    "bloom filter",
    "trie",
    "ring buffer",
    "json walker",
    "tokenizer",
];
const HOW: [&str; 6] = [
    "A tiny",
    "A fast",
    "A lock-free",
    "A readable",
    "A zero-copy",
    "An async",
];

const YEAR: i64 = 365 * 86_400;

fn generate(cfg: &SeedConfig, now: i64) -> Result<Data, DataError> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = cfg.users.max(1) as f64;
    let zipf =
        |s: f64| Zipf::new(n, s).map_err(|e| DataError::Invalid(format!("bad skew {s}: {e}")));
    let (authors, popular) = (zipf(cfg.skew * 0.7)?, zipf(cfg.skew)?);

    let users: Vec<_> = (1..=cfg.users)
        .map(|id| {
            let name = format!(
                "{} {}",
                FIRST[rng.random_range(0..FIRST.len())],
                LAST[rng.random_range(0..LAST.len())]
            );
            let bio = format!(
                "Writes {} snippets.",
                LANGS[rng.random_range(0..LANGS.len())]
            );
            (
                id,
                format!("user{id}"),
                name,
                bio,
                now - rng.random_range(YEAR..2 * YEAR),
            )
        })
        .collect();

    let mut by_author: Vec<Vec<usize>> = vec![Vec::new(); cfg.users as usize + 1];
    let posts: Vec<_> = (1..=cfg.posts)
        .map(|id| {
            let author = authors.sample(&mut rng) as i64;
            by_author[author as usize].push(id as usize - 1);
            let lang = LANGS[rng.random_range(0..LANGS.len())];
            let what = WHAT[rng.random_range(0..WHAT.len())];
            let title = format!("{} {what} in {lang}", HOW[rng.random_range(0..HOW.len())]);
            let content = format!(
                "// {title}\n// snippet #{id}\nfn main() {{\n    println!(\"{what}\");\n}}\n"
            );
            (
                id,
                author,
                title,
                lang.to_string(),
                content,
                now - rng.random_range(0..YEAR),
            )
        })
        .collect();

    let stars = gen_stars(cfg, &mut rng, &popular, &by_author, &posts, now);
    let follows = gen_follows(cfg, &mut rng, &popular, now);
    Ok(Data {
        users,
        posts,
        stars,
        follows,
    })
}

/// Stars: a Zipf-popular author's post, starred by anyone but its author,
/// at most once per (user, post).
fn gen_stars(
    cfg: &SeedConfig,
    rng: &mut StdRng,
    popular: &Zipf<f64>,
    by_author: &[Vec<usize>],
    posts: &[PostRow],
    now: i64,
) -> Vec<(i64, i64, i64)> {
    let mut seen = HashSet::with_capacity(cfg.stars as usize);
    let mut stars = Vec::with_capacity(cfg.stars as usize);
    let mut attempts = 0;
    while (stars.len() as i64) < cfg.stars && !posts.is_empty() && attempts < cfg.stars * 4 {
        attempts += 1;
        let author = popular.sample(rng) as usize;
        let Some(&post_ix) = by_author[author].choose(rng) else {
            continue;
        };
        let user = rng.random_range(1..=cfg.users);
        let (post_id, _, _, _, _, posted) = &posts[post_ix];
        if user == author as i64 || !seen.insert((user, *post_id)) {
            continue;
        }
        stars.push((user, *post_id, rng.random_range(*posted..=now)));
    }

    stars
}

/// Follows: a Zipf-popular followee, followed by anyone else, at most once
/// per pair.
fn gen_follows(
    cfg: &SeedConfig,
    rng: &mut StdRng,
    popular: &Zipf<f64>,
    now: i64,
) -> Vec<(i64, i64, i64)> {
    let mut seen = HashSet::with_capacity(cfg.follows as usize);
    let mut follows = Vec::with_capacity(cfg.follows as usize);
    let mut attempts = 0;
    while (follows.len() as i64) < cfg.follows && cfg.users > 1 && attempts < cfg.follows * 4 {
        attempts += 1;
        let followee = popular.sample(rng) as i64;
        let follower = rng.random_range(1..=cfg.users);
        if follower == followee || !seen.insert((follower, followee)) {
            continue;
        }
        follows.push((follower, followee, now - rng.random_range(0..YEAR)));
    }
    follows
}

fn progress(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn fail(what: &str) -> impl Fn(sqlx::Error) -> DataError + '_ {
    move |e| DataError::setup(format!("seeding {what} failed"), e)
}

/// A failed connection, named as one (with the URL, password hidden).
fn cannot_connect(url: &str) -> impl Fn(sqlx::Error) -> DataError + '_ {
    move |e| DataError::setup(format!("cannot connect to {}", hpdb::redacted_url(url)), e)
}

/// Whether the database already holds users. `url` needs a session of its
/// own (see [`crate::session_url`]).
pub async fn is_seeded(url: &str) -> Result<bool, DataError> {
    let count: i64 = match Backend::of_url(url)? {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect_with(&sqlite_options(url)?)
                .await
                .map_err(cannot_connect(url))?;
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&mut c)
                .await
                .map_err(fail("users"))?
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .map_err(cannot_connect(url))?;
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&mut c)
                .await
                .map_err(fail("users"))?
        }
    };
    Ok(count > 0)
}

/// Fills an empty, migrated database over `url`, which needs a session of
/// its own (see [`crate::session_url`]).
pub async fn seed(
    url: &str,
    cfg: &SeedConfig,
    show_progress: bool,
) -> Result<SeedReport, DataError> {
    if is_seeded(url).await? {
        return Err(DataError::Conflict(
            "the database already holds users; seed only an empty database".into(),
        ));
    }
    let data = generate(cfg, now())?;
    let total =
        (data.users.len() + data.posts.len() + data.stars.len() + data.follows.len()) as u64;
    let bar = progress(total, show_progress);
    match Backend::of_url(url)? {
        Backend::Sqlite => seed_sqlite(url, &data, &bar).await?,
        Backend::Postgres => seed_postgres(url, &data, &bar).await?,
    }
    bar.finish_with_message("seeded");
    Ok(SeedReport {
        users: data.users.len(),
        posts: data.posts.len(),
        stars: data.stars.len(),
        follows: data.follows.len(),
    })
}

async fn seed_sqlite(url: &str, d: &Data, bar: &ProgressBar) -> Result<(), DataError> {
    let mut conn = sqlx::SqliteConnection::connect_with(&sqlite_options(url)?)
        .await
        .map_err(cannot_connect(url))?;
    let mut tx = conn.begin().await.map_err(fail("begin"))?;
    // SQLite binds at most 32766 parameters per statement.
    bar.set_message("users");
    for chunk in d.users.chunks(5_000) {
        let mut q =
            QueryBuilder::new("INSERT INTO users (id, username, display_name, bio, created_at) ");
        q.push_values(chunk, |mut b, u| {
            b.push_bind(u.0)
                .push_bind(&u.1)
                .push_bind(&u.2)
                .push_bind(&u.3)
                .push_bind(u.4);
        });
        q.build().execute(&mut *tx).await.map_err(fail("users"))?;
        bar.inc(chunk.len() as u64);
    }
    bar.set_message("posts");
    for chunk in d.posts.chunks(5_000) {
        let mut q = QueryBuilder::new(
            "INSERT INTO posts (id, user_id, title, language, content, created_at) ",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(p.0)
                .push_bind(p.1)
                .push_bind(&p.2)
                .push_bind(&p.3)
                .push_bind(&p.4)
                .push_bind(p.5);
        });
        q.build().execute(&mut *tx).await.map_err(fail("posts"))?;
        bar.inc(chunk.len() as u64);
    }
    for (what, rows, sql) in [
        (
            "stars",
            &d.stars,
            "INSERT INTO stars (user_id, post_id, created_at) ",
        ),
        (
            "follows",
            &d.follows,
            "INSERT INTO follows (follower_id, followee_id, created_at) ",
        ),
    ] {
        bar.set_message(what);
        for chunk in rows.chunks(10_000) {
            let mut q = QueryBuilder::new(sql);
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.0).push_bind(r.1).push_bind(r.2);
            });
            q.build().execute(&mut *tx).await.map_err(fail(what))?;
            bar.inc(chunk.len() as u64);
        }
    }
    tx.commit().await.map_err(fail("commit"))?;
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .map_err(fail("analyze"))?;
    Ok(())
}

async fn seed_postgres(url: &str, d: &Data, bar: &ProgressBar) -> Result<(), DataError> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(cannot_connect(url))?;
    let mut tx = conn.begin().await.map_err(fail("begin"))?;
    bar.set_message("users");
    for c in d.users.chunks(20_000) {
        sqlx::query("INSERT INTO users (id, username, display_name, bio, created_at) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])")
            .bind(c.iter().map(|u| u.0).collect::<Vec<_>>())
            .bind(c.iter().map(|u| u.1.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|u| u.2.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|u| u.3.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|u| u.4).collect::<Vec<_>>())
            .execute(&mut *tx).await.map_err(fail("users"))?;
        bar.inc(c.len() as u64);
    }
    bar.set_message("posts");
    for c in d.posts.chunks(20_000) {
        sqlx::query("INSERT INTO posts (id, user_id, title, language, content, created_at) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])")
            .bind(c.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(c.iter().map(|p| p.1).collect::<Vec<_>>())
            .bind(c.iter().map(|p| p.2.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|p| p.3.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|p| p.4.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|p| p.5).collect::<Vec<_>>())
            .execute(&mut *tx).await.map_err(fail("posts"))?;
        bar.inc(c.len() as u64);
    }
    for (what, rows, sql) in [
        ("stars", &d.stars, "INSERT INTO stars (user_id, post_id, created_at) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])"),
        ("follows", &d.follows, "INSERT INTO follows (follower_id, followee_id, created_at) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])"),
    ] {
        bar.set_message(what);
        for c in rows.chunks(50_000) {
            sqlx::query(sql)
                .bind(c.iter().map(|r| r.0).collect::<Vec<_>>())
                .bind(c.iter().map(|r| r.1).collect::<Vec<_>>())
                .bind(c.iter().map(|r| r.2).collect::<Vec<_>>())
                .execute(&mut *tx).await.map_err(fail(what))?;
            bar.inc(c.len() as u64);
        }
    }
    sqlx::query("SELECT setval(pg_get_serial_sequence('posts', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM posts), false)")
        .execute(&mut *tx).await.map_err(fail("posts sequence"))?;
    tx.commit().await.map_err(fail("commit"))?;
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .map_err(fail("analyze"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data_with_skew_and_no_duplicates() {
        let cfg = SeedConfig::small();
        let (a, b) = (
            generate(&cfg, 1_000_000_000).unwrap(),
            generate(&cfg, 1_000_000_000).unwrap(),
        );
        assert_eq!(a.stars, b.stars);
        assert_eq!(a.follows, b.follows);
        let unique: HashSet<_> = a.stars.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(unique.len(), a.stars.len());
        assert!(a.follows.iter().all(|f| f.0 != f.1));
        let followers_of = |id| a.follows.iter().filter(|f| f.1 == id).count();
        assert!(
            followers_of(1) > 5 * followers_of(cfg.users / 2).max(1),
            "popularity is skewed"
        );
    }
}
