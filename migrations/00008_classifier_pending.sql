-- A retrained classifier chosen to replace the promoted version first waits, pending, while a scoring pass gives
-- every latent of its model its score; the pass then promotes it and demotes the old version in one transaction,
-- so that queries by attribute never read a version that has scored only part of the latents. A pending version
-- is not promoted, and an attribute has at most one.

-- +goose Up
ALTER TABLE classifiers
    ADD COLUMN pending boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT classifiers_pending_not_promoted CHECK (NOT (pending AND promoted));
CREATE UNIQUE INDEX classifiers_pending ON classifiers (model_id, attribute) WHERE pending;

-- +goose Down
DROP INDEX classifiers_pending;
ALTER TABLE classifiers
    DROP CONSTRAINT classifiers_pending_not_promoted,
    DROP COLUMN pending;
