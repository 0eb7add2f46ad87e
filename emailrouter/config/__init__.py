"""Files -> validated core objects: the shape of emailrouter.yaml as pydantic models (models, routing,
validation), the line-tracking YAML reader, the loaders, credentials and the JSON Schema. Imports the core,
never the service, the ops tools or the demo."""
