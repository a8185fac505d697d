"""The test harness shared by tests/ and bench/: the real programs on 127.0.0.1 (``procs``,
``swarm``), a fake journal file for virtual time (``memory_journal``), journal fault injection
(``fault_swarmd``, ``reliability_faults``) and the OpenAPI response validators
(``reliability_schema``). Not installed (setup.cfg lists only the four programs' packages): it
is imported from a checkout, with the repository root on ``sys.path``.

Nothing here imports from ``tests`` (tests/test_layout.py checks it).
"""
