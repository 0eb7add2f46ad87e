"""Files -> validated core objects: the line-tracking YAML reader, the loaders, settings, credentials and
the JSON Schema. Imports the core, never the service, the ops tools or the demo."""
