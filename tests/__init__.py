"""cellsp's test suite, one file per module it tests (``test_array.py`` for the cell arrays,
``test_pty_link.py`` for the board gateware behind a pty, ...), with shared parts beside them:
``configs.py`` (the small configs most tests run), ``hdl_checks.py`` (runs compared with the
golden model), ``reference_sp.py`` (an independent transcription of SPEC.md) and
``board_baselines.json`` (the smallest board builds' reports)."""
