"""Request handlers, one module per area. Handlers call services; they never write SQL."""
