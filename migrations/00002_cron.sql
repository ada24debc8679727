-- Scheduled work and the SQL surface: what the cron needs (runs per tick, classifier normalisation and training
-- data fingerprints, regeneration definitions and their runs, z_sem sketches for fast neighbours) and the views and
-- functions users query.

-- +goose Up

-- A classifier works on z_sem normalised with the per-dimension mean and std it was trained with; keeping them on
-- the row makes scoring and manipulation self-contained. trained_on fingerprints the labelled latents it was
-- trained on, so the cron retrains only when they change.
ALTER TABLE classifiers
    ADD COLUMN z_mean real[],
    ADD COLUMN z_std real[],
    ADD COLUMN trained_on text NOT NULL DEFAULT '',
    ADD CONSTRAINT classifiers_normalisation CHECK ((z_mean IS NULL) = (z_std IS NULL)
        AND (z_mean IS NULL OR (array_ndims(z_mean) = 1 AND array_length(z_mean, 1) = z_dim
            AND array_ndims(z_std) = 1 AND array_length(z_std, 1) = z_dim)));

-- One row per scheduled job and tick: whichever replica inserts it runs the tick; a row left unfinished by a
-- replica that died is taken over by the next one that gets the job's advisory lock.
CREATE TABLE cron_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL CHECK (job ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    tick        timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
    runner      text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error       text,
    summary     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(summary) = 'object'),
    UNIQUE (job, tick)
);
CREATE INDEX cron_runs_job_started ON cron_runs (job, started_at DESC);

-- A saved regeneration: a selection over latest_attribute_scores by fixed, typed parameters (never user SQL), and
-- what to do with each selected latent (re-decode, or re-manipulate along an attribute).
CREATE TABLE regenerations (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    model_id     text NOT NULL REFERENCES models (id),
    attribute    text NOT NULL CHECK (attribute ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    min_score    real NOT NULL DEFAULT 0.5 CHECK (min_score >= 0 AND min_score <= 1),
    max_score    real NOT NULL DEFAULT 1 CHECK (max_score >= min_score AND max_score <= 1),
    batch_id     text REFERENCES batches (id),
    max_images   integer NOT NULL DEFAULT 100 CHECK (max_images BETWEEN 1 AND 100000),
    op           text NOT NULL CHECK (op IN ('decode', 'manipulate')),
    op_attribute text CHECK (op_attribute ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    scale        double precision CHECK (scale <> 0 AND abs(scale) <= 100),
    steps        integer NOT NULL CHECK (steps BETWEEN 1 AND 1000),
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((op = 'manipulate') = (op_attribute IS NOT NULL AND scale IS NOT NULL))
);

-- One row per definition and tick. Its id is the regeneration jobs' generation, so job dedup keys (which hold the
-- generation and the image) differ from one tick to the next and repeat within one.
CREATE TABLE regeneration_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    regeneration_id text NOT NULL REFERENCES regenerations (id) ON DELETE CASCADE,
    tick            timestamptz NOT NULL,
    classifier_id   bigint REFERENCES classifiers (id) ON DELETE SET NULL,
    selected        integer NOT NULL DEFAULT 0 CHECK (selected >= 0),
    enqueued        integer NOT NULL DEFAULT 0 CHECK (enqueued >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (regeneration_id, tick)
);

-- A 256-bit sign-random-projection sketch of each latent's z_sem (bit i = sign of z·h_i for fixed Gaussian h_i):
-- the Hamming distance of two sketches estimates the angle between the latents, so a scan of 32-byte sketches
-- shortlists nearest-neighbour candidates that are then ranked by exact cosine. The cron fills it.
CREATE TABLE latent_sketches (
    latent_id bigint PRIMARY KEY REFERENCES latents (id) ON DELETE CASCADE,
    model_id  text NOT NULL,
    sketch    bit(256) NOT NULL,
    norm      real NOT NULL CHECK (norm >= 0) -- ‖z_sem‖, saved so exact cosine needs one dot product per candidate
);
CREATE INDEX latent_sketches_model ON latent_sketches (model_id);

-- Which batch an image was encoded in: the producer records one encode job per model and image.
CREATE INDEX jobs_encode_batch_image ON jobs (batch_id, (payload ->> 'image_hash')) WHERE kind = 'encode';

CREATE VIEW batch_images AS
SELECT batch_id, payload ->> 'model' AS model_id, payload ->> 'image_hash' AS image_hash, state
FROM jobs WHERE kind = 'encode' AND batch_id IS NOT NULL;

-- Every attribute score of every image, with the image's source name: "what does the system think of this image".
CREATE VIEW image_attributes AS
SELECT s.image_hash, i.source, s.model_id, s.latent_id, s.attribute, s.score, s.version AS classifier_version
FROM latest_attribute_scores s
JOIN images i ON i.hash = s.image_hash;

-- The label of each image and attribute that counts (the newest over all sources).
CREATE VIEW current_labels AS
SELECT DISTINCT ON (image_hash, attribute) image_hash, attribute, value, source, created_at
FROM labels
ORDER BY image_hash, attribute, created_at DESC, source;

-- Classifier versions with their held-out quality, newest first per attribute.
CREATE VIEW classifier_history AS
SELECT model_id, attribute, version, promoted, (metrics ->> 'auroc')::double precision AS auroc,
    (metrics ->> 'accuracy')::double precision AS accuracy, (metrics ->> 'positives')::integer AS positives,
    (metrics ->> 'negatives')::integer AS negatives, metrics ->> 'mode' AS mode, trained_at, id AS classifier_id
FROM classifiers;

-- +goose StatementBegin
-- The k latents of a model nearest to an image's latent by exact cosine similarity of z_sem: a full scan, exact.
CREATE FUNCTION nearest_latents_exact(image text, model text, k integer)
RETURNS TABLE (latent_id bigint, image_hash text, similarity double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH q AS (
        SELECT id, z_sem, sqrt((SELECT sum(x::double precision * x) FROM unnest(z_sem) x)) AS norm
        FROM latents WHERE model_id = model AND image_hash = image
    )
    SELECT l.id, l.image_hash, c.sim
    FROM latents l, q, LATERAL (
        SELECT sum(a::double precision * b) / NULLIF(q.norm * sqrt(sum(b::double precision * b)), 0) AS sim
        FROM unnest(q.z_sem, l.z_sem) AS t(a, b)
    ) c
    WHERE l.model_id = model AND l.id <> q.id
    ORDER BY c.sim DESC NULLS LAST, l.id
    LIMIT k
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- The same, ranked by exact cosine among the `candidates` latents whose sketches are nearest in Hamming distance:
-- approximate (a true neighbour whose sketch is far is missed) and fast. Latents without a sketch are not found.
CREATE FUNCTION nearest_latents(image text, model text, k integer, candidates integer DEFAULT 2000)
RETURNS TABLE (latent_id bigint, image_hash text, similarity double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH q AS (
        SELECT l.id, l.z_sem, s.sketch, s.norm
        FROM latents l JOIN latent_sketches s ON s.latent_id = l.id
        WHERE l.model_id = model AND l.image_hash = image
    ), cand AS (
        SELECT s.latent_id, s.norm
        FROM latent_sketches s, q
        WHERE s.model_id = model AND s.latent_id <> q.id
        ORDER BY bit_count(s.sketch # q.sketch), s.latent_id
        LIMIT greatest(candidates, k)
    )
    SELECT l.id, l.image_hash, c2.sim
    FROM cand JOIN latents l ON l.id = cand.latent_id, q, LATERAL (
        SELECT sum(a::double precision * b) / NULLIF(q.norm::double precision * cand.norm, 0) AS sim
        FROM unnest(q.z_sem, l.z_sem) AS t(a, b)
    ) c2
    ORDER BY c2.sim DESC NULLS LAST, l.id
    LIMIT k
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION nearest_latents(text, text, integer, integer);
DROP FUNCTION nearest_latents_exact(text, text, integer);
DROP VIEW classifier_history, current_labels, image_attributes, batch_images;
DROP INDEX jobs_encode_batch_image;
DROP TABLE latent_sketches, regeneration_runs, regenerations, cron_runs;
ALTER TABLE classifiers DROP CONSTRAINT classifiers_normalisation, DROP COLUMN trained_on, DROP COLUMN z_std,
    DROP COLUMN z_mean;
