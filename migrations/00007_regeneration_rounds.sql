-- A saved regeneration that manipulates to a target may refine its edits: the decoded edit is encoded again and
-- moved to the target again, rounds times in all (1: the single edit of the paper). Only with a target.

-- +goose Up
ALTER TABLE regenerations
    ADD COLUMN rounds integer NOT NULL DEFAULT 1,
    ADD CONSTRAINT regenerations_rounds CHECK (rounds BETWEEN 1 AND 8 AND (rounds = 1 OR target IS NOT NULL));

-- +goose Down
ALTER TABLE regenerations
    DROP CONSTRAINT regenerations_rounds,
    DROP COLUMN rounds;
