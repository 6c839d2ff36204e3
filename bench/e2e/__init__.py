"""The parts of bench/e2e_payments.py: load generation (``load``), the merchant's notify_url
(``receiver``), the bare-insert baseline (``baseline``), process CPU probes (``cpu``), what the
platform's own rows say (``platform_rows``), the measured phases (``phases``) and the report
(``report``)."""
