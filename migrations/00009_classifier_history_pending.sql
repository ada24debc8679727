-- classifier_history shows whether a version is pending (chosen, waiting for its scoring pass; 00008).

-- +goose Up
CREATE OR REPLACE VIEW classifier_history AS
SELECT model_id, attribute, version, promoted, (metrics ->> 'auroc')::double precision AS auroc,
    (metrics ->> 'accuracy')::double precision AS accuracy, (metrics ->> 'positives')::integer AS positives,
    (metrics ->> 'negatives')::integer AS negatives, metrics ->> 'mode' AS mode, trained_at, id AS classifier_id,
    pending
FROM classifiers;

-- +goose Down
DROP VIEW classifier_history;
CREATE VIEW classifier_history AS
SELECT model_id, attribute, version, promoted, (metrics ->> 'auroc')::double precision AS auroc,
    (metrics ->> 'accuracy')::double precision AS accuracy, (metrics ->> 'positives')::integer AS positives,
    (metrics ->> 'negatives')::integer AS negatives, metrics ->> 'mode' AS mode, trained_at, id AS classifier_id
FROM classifiers;
