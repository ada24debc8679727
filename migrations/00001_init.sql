-- The first schema: models, batches, images, latents, jobs, labels, classifiers, scores, outputs.
-- Names (models, batches, attributes) follow schema.CheckName; hashes are lower-case SHA-256 hex.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION shape_numel(shape integer[]) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n bigint := 1;
    d integer;
BEGIN
    FOREACH d IN ARRAY shape LOOP
        n := n * d;
    END LOOP;
    RETURN n;
END
$$;
-- +goose StatementEnd

CREATE TABLE models (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    z_dim          integer NOT NULL CHECK (z_dim > 0),
    config         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    checkpoint_key text CHECK (checkpoint_key ~ '^checkpoints/'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, z_dim) -- target of the latents' and classifiers' (model_id, z_dim) keys
);

CREATE TABLE batches (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name        text NOT NULL DEFAULT '',
    source      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz CHECK (finished_at >= created_at)
);

CREATE TABLE images (
    hash         text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    source       text NOT NULL DEFAULT '',
    object_key   text NOT NULL UNIQUE CHECK (object_key ~ '^images/'),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    width        integer CHECK (width > 0),
    height       integer CHECK (height > 0),
    content_type text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE latents (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id   text NOT NULL,
    z_dim      integer NOT NULL,
    image_hash text NOT NULL REFERENCES images (hash),
    z_sem      real[] NOT NULL,
    x_t        bytea NOT NULL,
    x_t_shape  integer[] NOT NULL,
    x_t_dtype  text NOT NULL DEFAULT 'float32' CHECK (x_t_dtype = 'float32'),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, image_hash),
    FOREIGN KEY (model_id, z_dim) REFERENCES models (id, z_dim),
    CONSTRAINT latents_z_sem_length CHECK (array_ndims(z_sem) = 1 AND array_length(z_sem, 1) = z_dim),
    CONSTRAINT latents_x_t_shape CHECK (array_ndims(x_t_shape) = 1 AND cardinality(x_t_shape) BETWEEN 1 AND 8
        AND 0 < ALL (x_t_shape)),
    -- x_t holds little-endian float32s, 4 bytes per element of its shape.
    CONSTRAINT latents_x_t_size CHECK (octet_length(x_t) = 4 * shape_numel(x_t_shape))
);

CREATE TABLE jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id    text REFERENCES batches (id),
    kind        text NOT NULL CHECK (kind IN ('encode', 'decode', 'manipulate', 'interpolate', 'sample', 'regenerate')),
    dedup_key   text NOT NULL UNIQUE,
    payload     jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    CHECK ((state IN ('done', 'failed', 'dead')) = (finished_at IS NOT NULL)),
    CHECK (state NOT IN ('failed', 'dead') OR last_error IS NOT NULL)
);
CREATE INDEX jobs_batch_state ON jobs (batch_id, state);
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_failed ON jobs (batch_id, updated_at) WHERE state IN ('failed', 'dead');

CREATE TABLE labels (
    image_hash text NOT NULL REFERENCES images (hash),
    attribute  text NOT NULL CHECK (attribute ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    value      boolean NOT NULL,
    source     text NOT NULL CHECK (source <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (image_hash, attribute, source)
);
CREATE INDEX labels_attribute ON labels (attribute, value);

CREATE TABLE classifiers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id   text NOT NULL,
    z_dim      integer NOT NULL,
    attribute  text NOT NULL CHECK (attribute ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    version    integer NOT NULL CHECK (version > 0),
    weights    real[] NOT NULL,
    bias       real NOT NULL,
    metrics    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    promoted   boolean NOT NULL DEFAULT false,
    trained_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (model_id, z_dim) REFERENCES models (id, z_dim),
    UNIQUE (model_id, attribute, version),
    UNIQUE (id, attribute), -- target of attribute_scores' (classifier_id, attribute) key
    CONSTRAINT classifiers_weights_length CHECK (array_ndims(weights) = 1 AND array_length(weights, 1) = z_dim)
);
-- At most one promoted classifier per model and attribute.
CREATE UNIQUE INDEX classifiers_promoted ON classifiers (model_id, attribute) WHERE promoted;

CREATE TABLE attribute_scores (
    latent_id     bigint NOT NULL REFERENCES latents (id) ON DELETE CASCADE,
    classifier_id bigint NOT NULL,
    attribute     text NOT NULL, -- copied from the classifier (kept equal by the key below) so the index can serve it
    score         real NOT NULL CHECK (score >= 0 AND score <= 1),
    scored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (latent_id, classifier_id),
    FOREIGN KEY (classifier_id, attribute) REFERENCES classifiers (id, attribute) ON DELETE CASCADE
);
CREATE INDEX attribute_scores_attribute_score ON attribute_scores (attribute, score DESC);
CREATE INDEX attribute_scores_classifier_score ON attribute_scores (classifier_id, score DESC);

CREATE TABLE outputs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('decode', 'manipulate', 'interpolate', 'sample', 'regenerate')),
    dedup_key    text NOT NULL UNIQUE,
    object_key   text NOT NULL CHECK (object_key ~ '^outputs/'),
    content_type text NOT NULL DEFAULT '',
    size_bytes   bigint CHECK (size_bytes >= 0),
    model_id     text REFERENCES models (id),
    job_id       bigint REFERENCES jobs (id) ON DELETE SET NULL,
    latent_ids   bigint[] NOT NULL DEFAULT '{}',
    params       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outputs_latent_ids ON outputs USING gin (latent_ids);

-- Each latent's score from the promoted classifier of each attribute: what people query.
CREATE VIEW latest_attribute_scores AS
SELECT l.id AS latent_id, l.image_hash, l.model_id, c.attribute, s.score, c.id AS classifier_id, c.version
FROM attribute_scores s
JOIN classifiers c ON c.id = s.classifier_id AND c.promoted
JOIN latents l ON l.id = s.latent_id;

-- +goose Down
DROP VIEW latest_attribute_scores;
DROP TABLE outputs, attribute_scores, classifiers, labels, jobs, latents, images, batches, models;
DROP FUNCTION shape_numel(integer[]);
