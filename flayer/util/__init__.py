"""Small shared utilities: errors a user can act on, atomic writes, seeded streams, registries."""
