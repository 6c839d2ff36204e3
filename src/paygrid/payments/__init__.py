"""Payment core (支付核心): payments, their state machine, channel calls, callbacks, 补单."""
