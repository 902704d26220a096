"""Op-based jobs."""
