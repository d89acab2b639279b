"""Deduplication: exact (hash of normalised text) and MinHash LSH near-dedup with verification."""
