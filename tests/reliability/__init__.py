"""Reliability and security suite: the bad-input corpus, untrusted files, concurrency and faults."""
