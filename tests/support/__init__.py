"""Servers the tests and benchmarks run: the scripted, fault-injecting SMTP sink and the Dovecot harness."""
