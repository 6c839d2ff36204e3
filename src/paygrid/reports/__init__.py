"""Reports (报表): read models over payments and the ledger, as files finance can open."""
