"""Infrastructure shared by several layers: embedded servers, security, ids, Redis."""
