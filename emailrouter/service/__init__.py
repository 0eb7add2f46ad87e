"""The shell around the core: the state store, IMAP, SMTP, the daemon (polling, outbox, scheduling,
reload, watchdog), metrics, sd_notify and logs. Imports the core and the config, never the ops tools or
the demo."""
