-- The scoring pass, the latent listing and the sampling of a model's latents read them by model in id order; with
-- several models the primary key's order made each of them walk every model's rows. Built concurrently so that
-- workers keep writing latents meanwhile (hence outside a transaction).

-- +goose NO TRANSACTION

-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS latents_model_id ON latents (model_id, id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS latents_model_id;
