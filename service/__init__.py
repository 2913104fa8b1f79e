"""The service layer: settings, the glue between storage and fitting, the REST API and the CLI."""
