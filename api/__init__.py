"""The HTTP surface besides ingest: auth, reads, errors, OpenAPI, health; ``create_app`` lives here."""
