"""Studies: the rules (service) and the SQL (repository) behind the study endpoints."""
