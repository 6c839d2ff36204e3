"""Messaging: outbox (events written in the state change's transaction), the relay that
publishes them, bus adapters behind one interface, and consumer deduplication (inbox)."""
