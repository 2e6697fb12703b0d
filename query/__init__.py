"""pixdex.query."""
