"""The HTTP layer: app factory (`app.create_app`), route table, handlers per area, middleware, errors,
WebSocket plumbing. Nothing is imported here, so the services can use `http.sockets` without loading
the app."""
