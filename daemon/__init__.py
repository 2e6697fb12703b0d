"""pixdex.daemon."""
