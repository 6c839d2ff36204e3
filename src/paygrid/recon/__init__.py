"""Reconciliation (对账): channel bills and bank statements against paygrid's own records, the
differences as cases (差错), and per-SKU figures (按商品对账)."""
