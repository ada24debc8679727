-- A latent whose z_sem holds NaN or an infinity (none can be stored since this release; older rows may have them)
-- had a NaN similarity, which Postgres sorts above every number: it came first in every nearest_latents_exact
-- answer. Its similarity is now NULL, sorted last.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nearest_latents_exact(image text, model text, k integer)
RETURNS TABLE (latent_id bigint, image_hash text, similarity double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH q AS (
        SELECT id, z_sem, sqrt((SELECT sum(x::double precision * x) FROM unnest(z_sem) x)) AS norm
        FROM latents WHERE model_id = model AND image_hash = image
    )
    SELECT l.id, l.image_hash,
        NULLIF(c.dot / NULLIF(q.norm * COALESCE(sk.norm, (SELECT sqrt(sum(x::double precision * x)) FROM unnest(l.z_sem) x)), 0),
            'NaN') AS sim
    FROM latents l LEFT JOIN latent_sketches sk ON sk.latent_id = l.id, q, LATERAL (
        SELECT sum(a::double precision * b) AS dot FROM unnest(q.z_sem, l.z_sem) AS t(a, b)
    ) c
    WHERE l.model_id = model AND l.id <> q.id
    ORDER BY sim DESC NULLS LAST, l.id
    LIMIT k
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nearest_latents_exact(image text, model text, k integer)
RETURNS TABLE (latent_id bigint, image_hash text, similarity double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH q AS (
        SELECT id, z_sem, sqrt((SELECT sum(x::double precision * x) FROM unnest(z_sem) x)) AS norm
        FROM latents WHERE model_id = model AND image_hash = image
    )
    SELECT l.id, l.image_hash,
        c.dot / NULLIF(q.norm * COALESCE(sk.norm, (SELECT sqrt(sum(x::double precision * x)) FROM unnest(l.z_sem) x)), 0) AS sim
    FROM latents l LEFT JOIN latent_sketches sk ON sk.latent_id = l.id, q, LATERAL (
        SELECT sum(a::double precision * b) AS dot FROM unnest(q.z_sem, l.z_sem) AS t(a, b)
    ) c
    WHERE l.model_id = model AND l.id <> q.id
    ORDER BY sim DESC NULLS LAST, l.id
    LIMIT k
$$;
-- +goose StatementEnd
