"""Everything that talks to model endpoints: the gateway, its rate limiter and its journal."""
