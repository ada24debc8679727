-- A classifier's pattern (diffae.Classifier.Pattern): the unit vector Σw/‖Σw‖ over its normalised training codes,
-- the direction manipulation moves codes along. NULL for versions trained before it was recorded: those move along
-- their weight vector.

-- +goose Up
ALTER TABLE classifiers
    ADD COLUMN pattern real[],
    ADD CONSTRAINT classifiers_pattern_length CHECK (pattern IS NULL
        OR (array_ndims(pattern) = 1 AND array_length(pattern, 1) = z_dim));

-- +goose Down
ALTER TABLE classifiers
    DROP CONSTRAINT classifiers_pattern_length,
    DROP COLUMN pattern;
