"""Routing (路由): which channel a payment goes through — rules, cut-over weights, channel
health with a circuit breaker, failover and cost. See docs/routing.md."""
