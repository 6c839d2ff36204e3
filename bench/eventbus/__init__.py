"""The parts of bench/bus.py: the bench event and its stream (``shape``), the relay and consumer
processes (``children``), the measured phases (``phases``) and the report (``report``)."""
