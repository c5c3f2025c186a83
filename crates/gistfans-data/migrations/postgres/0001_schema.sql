-- GistFans schema (PostgreSQL). Timestamps are Unix seconds (UTC).
CREATE TABLE users (
    id           BIGINT PRIMARY KEY,
    username     TEXT   NOT NULL UNIQUE,
    display_name TEXT   NOT NULL,
    bio          TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);

CREATE TABLE posts (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      TEXT   NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    language   TEXT   NOT NULL CHECK (length(language) BETWEEN 1 AND 40),
    content    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
-- Recent posts of a user, newest first.
CREATE INDEX posts_user_recent ON posts (user_id, created_at DESC, id DESC);

CREATE TABLE stars (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    post_id    BIGINT NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, post_id) -- no double star
);
-- Stars of a post (counts, history by day).
CREATE INDEX stars_post_time ON stars (post_id, created_at);

CREATE TABLE follows (
    follower_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followee_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id) -- no self-follow
);
-- Followers of a user, newest first.
CREATE INDEX follows_followee ON follows (followee_id, created_at DESC, follower_id);
