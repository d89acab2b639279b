"""Mixtures: a spec of phases and weighted components, planned over catalog statistics, then
materialised into tokenized, versioned Parquet phase shards."""
