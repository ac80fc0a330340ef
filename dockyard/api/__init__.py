"""The management API (/v1): routes, schemas, API-token auth and error bodies."""
