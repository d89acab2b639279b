"""Background jobs: persisted records, worker processes that run them, and a dispatcher."""
