-- A saved regeneration that manipulates may move each latent to a logit target its classifier recorded (median or a
-- quantile of the positives' logits, as manipulate jobs may) instead of by a fixed scale: exactly one of the two.

-- +goose Up
-- +goose StatementBegin
DO $$
DECLARE c text;
BEGIN
    -- The unnamed check of migration 2 that tied op to op_attribute and scale.
    SELECT conname INTO c FROM pg_constraint
    WHERE conrelid = 'regenerations'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%op_attribute IS NOT NULL%scale IS NOT NULL%';
    IF c IS NOT NULL THEN
        EXECUTE format('ALTER TABLE regenerations DROP CONSTRAINT %I', c);
    END IF;
END $$;
-- +goose StatementEnd
ALTER TABLE regenerations
    ADD COLUMN target text CHECK (target IN ('median', 'p75', 'p90', 'p95')),
    ADD CONSTRAINT regenerations_op_fields CHECK (CASE WHEN op = 'manipulate'
        THEN op_attribute IS NOT NULL AND ((scale IS NULL) <> (target IS NULL))
        ELSE op_attribute IS NULL AND scale IS NULL AND target IS NULL END);

-- +goose Down
ALTER TABLE regenerations
    DROP CONSTRAINT regenerations_op_fields,
    DROP COLUMN target,
    ADD CHECK ((op = 'manipulate') = (op_attribute IS NOT NULL AND scale IS NOT NULL));
