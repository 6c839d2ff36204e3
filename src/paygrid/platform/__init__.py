"""The platform's wiring: how the bounded contexts become running processes.

- ``bootstrap``: the composition root (the one place adapters are wired to the domain);
- ``embedded``: the embedded profile, everything in one process (``paygrid up``);
- ``roles``: the production profile's processes, one role each (``paygrid run ROLE``);
- ``supervisor``: the production profile's supervisor (``paygrid up --profile prod``).
"""
