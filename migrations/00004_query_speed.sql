-- Measured on a million latents (cron.BenchmarkQueries1M): an attribute threshold query through
-- latest_attribute_scores took a parallel sequential scan of attribute_scores (the view exposed the classifier's
-- attribute column, so the filter could not reach the (attribute, score) index), and looking an image up by hash
-- scanned latents (their key leads with model_id).

-- +goose Up
-- The view now takes attribute from attribute_scores, which its foreign key keeps equal to the classifier's.
CREATE OR REPLACE VIEW latest_attribute_scores AS
SELECT l.id AS latent_id, l.image_hash, l.model_id, s.attribute, s.score, c.id AS classifier_id, c.version
FROM attribute_scores s
JOIN classifiers c ON c.id = s.classifier_id AND c.promoted
JOIN latents l ON l.id = s.latent_id;

CREATE INDEX latents_image_hash ON latents (image_hash);

-- +goose Down
DROP INDEX latents_image_hash;
CREATE OR REPLACE VIEW latest_attribute_scores AS
SELECT l.id AS latent_id, l.image_hash, l.model_id, c.attribute, s.score, c.id AS classifier_id, c.version
FROM attribute_scores s
JOIN classifiers c ON c.id = s.classifier_id AND c.promoted
JOIN latents l ON l.id = s.latent_id;
