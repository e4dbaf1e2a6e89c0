-- Full-text index (FTS5) over text that resources choose to expose (clinical notes).
-- Text is folded (lower case, accents removed) before it is indexed and queried.
CREATE VIRTUAL TABLE text_index USING fts5(
    body,
    tenant_id UNINDEXED,
    resource_type UNINDEXED,
    resource_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
