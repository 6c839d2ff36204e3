"""UnionPay online gateway (银联全渠道 ACP 5.1.0): adapter, signing, bill reader, sandbox."""
