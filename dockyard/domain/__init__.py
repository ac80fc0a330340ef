"""The rules of Dockyard, free of HTTP: projects, registries, credentials."""
